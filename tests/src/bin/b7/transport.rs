//! The in-memory "socket" of B7: a `Stream<Item = Result<Incoming, _>> + Sink<Message>` for the
//! server side (what `serve_connection` and the naive peer's handler take), and its client end.
//!
//! Server to client is a bounded pipe of whole messages, like a socket's send buffer counted in
//! messages: [`Sink::poll_ready`] waits while it holds `capacity` messages, and the client is
//! woken on **flush** (or when the pipe is full), not on every `start_send`. So a server that
//! writes a batch and flushes once (ours) wakes its client once per batch, and one that sends
//! and flushes every frame (the naive peer) wakes it per frame, as a system call per write
//! would. Client to server (pongs, the echo of a close) is an unbounded tokio channel: a
//! well-behaved client sends almost nothing.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_util::{Sink, Stream};
use misar_proto::message::{Incoming, Message};
use tokio::sync::mpsc;

/// The other end is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl misar_proto_tokio::server::TransportError for Closed {
    fn violation(&self) -> Option<misar_proto::message::Violation> {
        None
    }
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the in-memory peer is gone")
    }
}

impl std::error::Error for Closed {}

/// A pipe whose queue grew past this many messages gets a fresh, small one once it is empty
/// again (a kernel socket does not keep a burst's buffer either).
const IDLE_QUEUE_CAPACITY: usize = 32;

struct PipeState {
    queue: VecDeque<Message>,
    capacity: usize,
    sender_gone: bool,
    receiver_gone: bool,
    /// The client waits for messages.
    receiver: Option<Waker>,
    /// The server waits for room.
    sender: Option<Waker>,
}

struct Pipe(Mutex<PipeState>);

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The server's end: what the connection handler (ours or the naive peer's) reads and writes.
pub struct ServerEnd {
    to_client: Arc<Pipe>,
    from_client: mpsc::UnboundedReceiver<Incoming>,
}

/// The client's end: the in-process stand-in for a WebSocket client.
pub struct ClientEnd {
    from_server: Arc<Pipe>,
    to_server: mpsc::UnboundedSender<Incoming>,
}

/// A connected pair; the server side holds at most `capacity` unread messages (at least 1).
pub fn pair(capacity: usize) -> (ServerEnd, ClientEnd) {
    let pipe = Arc::new(Pipe(Mutex::new(PipeState {
        queue: VecDeque::new(),
        capacity: capacity.max(1),
        sender_gone: false,
        receiver_gone: false,
        receiver: None,
        sender: None,
    })));
    let (to_server, from_client) = mpsc::unbounded_channel();
    (
        ServerEnd {
            to_client: Arc::clone(&pipe),
            from_client,
        },
        ClientEnd {
            from_server: pipe,
            to_server,
        },
    )
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl Stream for ServerEnd {
    type Item = Result<Incoming, Closed>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.from_client.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Sink<Message> for ServerEnd {
    type Error = Closed;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Closed>> {
        let mut state = self.to_client.lock();
        if state.receiver_gone {
            return Poll::Ready(Err(Closed));
        }
        if state.queue.len() < state.capacity {
            return Poll::Ready(Ok(()));
        }
        // Full: the client must hear of what is there even before a flush.
        register(&mut state.sender, cx);
        let receiver = state.receiver.take();
        drop(state);
        wake(receiver);
        Poll::Pending
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Closed> {
        let mut state = self.to_client.lock();
        if state.receiver_gone {
            return Err(Closed);
        }
        state.queue.push_back(message);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Closed>> {
        let mut state = self.to_client.lock();
        if state.receiver_gone {
            return Poll::Ready(Err(Closed));
        }
        let receiver = if state.queue.is_empty() {
            None
        } else {
            state.receiver.take()
        };
        drop(state);
        wake(receiver);
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Closed>> {
        close_sender(&self.to_client);
        Poll::Ready(Ok(()))
    }
}

fn close_sender(pipe: &Pipe) {
    let mut state = pipe.lock();
    state.sender_gone = true;
    let receiver = state.receiver.take();
    drop(state);
    wake(receiver);
}

impl Drop for ServerEnd {
    fn drop(&mut self) {
        close_sender(&self.to_client);
    }
}

impl ClientEnd {
    /// Waits until the server wrote something, then moves up to `max` messages into `out`.
    /// `false` once the server end is gone and everything it wrote was taken.
    pub async fn recv_many(&self, out: &mut Vec<Message>, max: usize) -> bool {
        std::future::poll_fn(|cx| self.poll_recv_many(cx, out, max)).await
    }

    fn poll_recv_many(&self, cx: &Context<'_>, out: &mut Vec<Message>, max: usize) -> Poll<bool> {
        let mut state = self.from_server.lock();
        if !state.queue.is_empty() {
            let n = state.queue.len().min(max.max(1));
            out.extend(state.queue.drain(..n));
            if state.queue.is_empty() && state.queue.capacity() > IDLE_QUEUE_CAPACITY {
                state.queue = VecDeque::new();
            }
            let sender = state.sender.take();
            drop(state);
            wake(sender);
            return Poll::Ready(true);
        }
        if state.sender_gone {
            return Poll::Ready(false);
        }
        register(&mut state.receiver, cx);
        Poll::Pending
    }

    /// Sends a message to the server (a pong, a close); `false` when it is gone.
    pub fn send(&self, message: Incoming) -> bool {
        self.to_server.send(message).is_ok()
    }
}

impl Drop for ClientEnd {
    fn drop(&mut self) {
        let mut state = self.from_server.lock();
        state.receiver_gone = true;
        state.queue = VecDeque::new();
        let sender = state.sender.take();
        drop(state);
        wake(sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};

    #[tokio::test]
    async fn messages_flow_both_ways_and_the_pipe_is_bounded() {
        let (mut server, client) = pair(2);
        server
            .feed(Message::Text(Bytes::from_static(b"a")))
            .await
            .unwrap();
        server
            .feed(Message::Text(Bytes::from_static(b"b")))
            .await
            .unwrap();
        // Full: a third send waits until the client reads.
        let third = server.send(Message::Text(Bytes::from_static(b"c")));
        tokio::pin!(third);
        assert!(futures_util::poll!(third.as_mut()).is_pending());
        let mut out = Vec::new();
        assert!(client.recv_many(&mut out, 16).await);
        assert_eq!(out.len(), 2);
        third.await.unwrap();
        out.clear();
        assert!(client.recv_many(&mut out, 16).await);
        assert_eq!(out, vec![Message::Text(Bytes::from_static(b"c"))]);

        assert!(client.send(Incoming::Pong(Bytes::new())));
        assert_eq!(server.next().await, Some(Ok(Incoming::Pong(Bytes::new()))));
        drop(server);
        out.clear();
        assert!(!client.recv_many(&mut out, 16).await);
    }

    #[tokio::test]
    async fn a_gone_client_fails_the_writes() {
        let (mut server, client) = pair(4);
        drop(client);
        assert!(server.send(Message::Ping(Bytes::new())).await.is_err());
        assert_eq!(server.next().await, None);
    }
}
