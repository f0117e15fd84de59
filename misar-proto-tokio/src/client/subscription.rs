//! [`Subscription`] (events only) and [`Updates`] (events plus connection news): two views of
//! one driver.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Fuse};
use futures_util::{Stream, StreamExt};
use misar_proto::client::{ClientSession, InvalidMessage};
use misar_proto::close::Disconnect;
use misar_proto::event::Event;
use misar_proto::route::Channel;
use tokio::sync::watch;

use super::driver::Driver;
use super::{ReconnectPolicy, SubscriptionError};

/// What [`Updates`] yields: events and what happened to the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Update {
    /// A connection was established (the first, or a reconnect).
    Connected,
    /// An event, with the text frame it was decoded from.
    Event {
        /// The decoded event.
        event: Event,
        /// The frame as received (shared, not copied).
        raw: Bytes,
    },
    /// A message that is not an event of this channel (undecodable text, or binary). The
    /// connection stays up.
    Invalid {
        /// What is wrong with it.
        error: InvalidMessage,
        /// The message as received.
        raw: Bytes,
    },
    /// The connection ended (or an attempt failed) and the client reconnects after `after`.
    Reconnecting {
        /// How it ended.
        cause: Disconnect,
        /// The delay: drawn by the core's backoff, or the server's `Retry-After` of a
        /// 429/503 capped by the backoff's cap.
        after: Duration,
        /// Reconnect attempts in a row, this one included (1 after a healthy connection).
        attempt: u32,
        /// The `Retry-After` the server sent with a 429 or 503 (uncapped), if it did.
        retry_after: Option<Duration>,
    },
}

pub(super) type Item = Result<Update, SubscriptionError>;

/// The driver behind both views, and the way to ask it to close.
struct Inner {
    channel: Channel,
    stream: Fuse<BoxStream<'static, Item>>,
    close: watch::Sender<bool>,
}

impl Inner {
    fn start(
        session: ClientSession,
        reconnect: ReconnectPolicy,
        connect_timeout: Duration,
    ) -> Self {
        let channel = session.channel().clone();
        let (close, close_requested) = watch::channel(false);
        let driver = Driver::new(session, reconnect, connect_timeout, close_requested);
        // The driver owns the connection; each poll runs it until it has something to say.
        let stream = futures_util::stream::unfold(driver, |mut driver| async move {
            let item = driver.next().await?;
            Some((item, driver))
        })
        .boxed()
        .fuse();
        Self {
            channel,
            stream,
            close,
        }
    }

    async fn close(&mut self) {
        self.close.send_replace(true);
        // The driver sends close 1000 and waits (bounded by the close grace) for the server's
        // answer; whatever it still had to deliver is dropped.
        while self.stream.next().await.is_some() {}
    }
}

/// A subscription to one channel: a [`Stream`] of `Result<Event, SubscriptionError>` that
/// reconnects per §2.6. See the [module docs](super) for what it yields and when it ends.
///
/// It connects on the first poll and does nothing unless polled (a consumer that stops
/// polling stops reading, and the server's queue for it fills: §2.7); poll it inside a tokio
/// runtime with time and I/O enabled. No task is spawned: dropping it drops the connection
/// without a close frame; [`close`](Self::close) closes with 1000.
///
/// `Send`, not `Sync`.
pub struct Subscription {
    inner: Inner,
}

impl Subscription {
    pub(super) fn start(
        session: ClientSession,
        reconnect: ReconnectPolicy,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            inner: Inner::start(session, reconnect, connect_timeout),
        }
    }

    /// The channel subscribed to.
    pub fn channel(&self) -> &Channel {
        &self.inner.channel
    }

    /// Closes with 1000 and waits for the server's close, bounded by the close grace (one
    /// grace for writing the close, one for the answer). Items not yet taken are dropped;
    /// afterwards the stream yields `None`. While no connection is up, it ends at once.
    pub async fn close(&mut self) {
        self.inner.close().await;
    }

    /// The same subscription, yielding [`Update`]s: connection news, undecodable messages and
    /// the raw frames as well as the events.
    pub fn updates(self) -> Updates {
        Updates { inner: self.inner }
    }
}

impl Stream for Subscription {
    type Item = Result<Event, SubscriptionError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.inner.stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Update::Event { event, .. }))) => {
                    return Poll::Ready(Some(Ok(event)));
                }
                // Connection news and invalid messages were logged by the driver.
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}

/// A [`Subscription`] that yields [`Update`]s. Made by [`Subscription::updates`].
///
/// Errors end it exactly as they end a `Subscription` (an `Err` is the last item).
pub struct Updates {
    inner: Inner,
}

impl Updates {
    /// The channel subscribed to.
    pub fn channel(&self) -> &Channel {
        &self.inner.channel
    }

    /// Closes with 1000; see [`Subscription::close`].
    pub async fn close(&mut self) {
        self.inner.close().await;
    }
}

impl Stream for Updates {
    type Item = Result<Update, SubscriptionError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.stream.poll_next_unpin(cx)
    }
}

impl fmt::Debug for Updates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Updates")
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}
