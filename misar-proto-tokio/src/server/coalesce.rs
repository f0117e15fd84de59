//! [`WriteCoalescer`]: gathers small writes into one system call, and holds no memory when idle.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An `AsyncRead + AsyncWrite` wrapper that gathers writes in a buffer of up to `limit` bytes
/// and writes them to the inner stream in one call when the buffer is full or flushed.
///
/// Why it exists: a fan-out batch is dozens of small frames (a ping is 2 bytes, an event a few
/// hundred). Written one by one, or in small chunks, every write is a system call, and on a
/// TCP socket each call pays the whole transmit path (on loopback, the receiver's path too).
/// A WebSocket library can gather frames itself (tungstenite's `write_buffer_size`), but it
/// keeps its buffer's capacity for the life of the connection, so every connection that was
/// ever busy holds that much memory while idle. This buffer is **released on every flush that
/// empties it**: an idle connection holds no write buffer, and a busy one at most `limit` bytes.
///
/// Use it under the WebSocket library with the library's own write buffer set to 0 (each frame
/// is handed over at once; this wrapper does the gathering):
///
/// ```no_run
/// use misar_proto_tokio::server::{recommended_websocket_config, WriteCoalescer};
///
/// # async fn accept(tcp: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
/// let config = recommended_websocket_config().write_buffer_size(0);
/// let io = WriteCoalescer::new(tcp, 64 << 10);
/// let ws = tokio_tungstenite::accept_async_with_config(io, Some(config)).await?;
/// # drop(ws);
/// # Ok(())
/// # }
/// ```
///
/// Reads pass straight through. A write that does not fit is preceded by writing out what is
/// buffered; a single write of `limit` bytes or more goes straight to the inner stream.
#[derive(Debug)]
pub struct WriteCoalescer<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written to `inner`.
    written: usize,
    limit: usize,
}

impl<S> WriteCoalescer<S> {
    /// Wraps `inner`, gathering up to `limit` bytes (0: every write goes straight through).
    pub fn new(inner: S, limit: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            written: 0,
            limit,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes buffered and not yet written to the inner stream.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.written)
    }

    /// Bytes of memory the buffer holds (0 once a flush emptied it).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The wrapped stream back. Buffered bytes that were not flushed are lost.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncWrite + Unpin> WriteCoalescer<S> {
    /// Writes out everything buffered. Keeps the allocation (for the write that follows).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(rest) = self.buf.get(self.written..).filter(|rest| !rest.is_empty()) {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written = self.written.saturating_add(n);
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteCoalescer<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteCoalescer<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buffered().saturating_add(data.len()) > this.limit {
            ready!(this.poll_drain(cx))?;
            if data.len() >= this.limit {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        // Everything is out: an idle connection keeps no write buffer.
        this.buf = Vec::new();
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        this.buf = Vec::new();
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A sink that records every write call and accepts at most `accept` bytes per call, or
    /// none (`Pending`) while `blocked`.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        accept: Option<usize>,
        blocked: bool,
        flushes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.blocked {
                return Poll::Pending;
            }
            let n = self.accept.map_or(data.len(), |max| max.min(data.len()));
            self.writes.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn all(writes: &[Vec<u8>]) -> Vec<u8> {
        writes.concat()
    }

    #[tokio::test]
    async fn small_writes_become_one_write_at_the_flush_and_the_buffer_is_released() {
        let mut io = WriteCoalescer::new(Recorder::default(), 1024);
        for i in 0..10u8 {
            io.write_all(&[i; 10]).await.unwrap();
        }
        assert_eq!(
            io.get_ref().writes.len(),
            0,
            "nothing written before the flush"
        );
        assert_eq!(io.buffered(), 100);
        assert!(io.capacity() >= 100);
        io.flush().await.unwrap();
        assert_eq!(io.get_ref().writes.len(), 1);
        assert_eq!(io.get_ref().flushes, 1);
        assert_eq!(io.get_ref().writes[0].len(), 100);
        assert_eq!(io.buffered(), 0);
        assert_eq!(io.capacity(), 0, "an idle connection holds no write buffer");
    }

    #[tokio::test]
    async fn a_full_buffer_is_written_out_before_more_is_taken_and_order_is_kept() {
        let mut io = WriteCoalescer::new(Recorder::default(), 25);
        let mut expected = Vec::new();
        for i in 0..10u8 {
            io.write_all(&[i; 10]).await.unwrap();
            expected.extend_from_slice(&[i; 10]);
        }
        io.flush().await.unwrap();
        let writes = &io.get_ref().writes;
        assert!(writes.iter().all(|w| w.len() <= 25), "{writes:?}");
        assert_eq!(writes.len(), 5, "two writes of 10 per call");
        assert_eq!(all(writes), expected);
    }

    #[tokio::test]
    async fn a_large_write_goes_straight_through_after_what_was_buffered() {
        let mut io = WriteCoalescer::new(Recorder::default(), 16);
        io.write_all(b"abc").await.unwrap();
        io.write_all(&[b'x'; 40]).await.unwrap();
        let writes = &io.get_ref().writes;
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0], b"abc");
        assert_eq!(writes[1].len(), 40);
        assert_eq!(io.buffered(), 0);
    }

    #[tokio::test]
    async fn partial_writes_of_the_inner_stream_are_resumed() {
        let recorder = Recorder {
            accept: Some(7),
            ..Recorder::default()
        };
        let mut io = WriteCoalescer::new(recorder, 100);
        io.write_all(&[1; 30]).await.unwrap();
        io.write_all(&[2; 30]).await.unwrap();
        io.flush().await.unwrap();
        let mut expected = vec![1; 30];
        expected.extend_from_slice(&[2; 30]);
        assert_eq!(all(&io.get_ref().writes), expected);
        assert_eq!(io.capacity(), 0);
    }

    #[test]
    fn a_blocked_stream_keeps_the_bytes_and_refuses_more_once_full() {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let recorder = Recorder {
            blocked: true,
            ..Recorder::default()
        };
        let mut io = WriteCoalescer::new(recorder, 10);
        let mut pinned = Pin::new(&mut io);
        assert!(matches!(
            pinned.as_mut().poll_write(&mut cx, b"12345678"),
            Poll::Ready(Ok(8))
        ));
        assert!(pinned.as_mut().poll_write(&mut cx, b"9abc").is_pending());
        assert!(pinned.as_mut().poll_flush(&mut cx).is_pending());
        assert_eq!(io.buffered(), 8, "held, not lost");
        io.inner.blocked = false;
        let mut pinned = Pin::new(&mut io);
        assert!(matches!(
            pinned.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(all(&io.get_ref().writes), b"12345678");
    }

    #[tokio::test]
    async fn a_zero_limit_writes_everything_straight_through() {
        let mut io = WriteCoalescer::new(Recorder::default(), 0);
        io.write_all(b"ab").await.unwrap();
        io.write_all(b"cd").await.unwrap();
        assert_eq!(io.get_ref().writes, vec![b"ab".to_vec(), b"cd".to_vec()]);
        assert_eq!(io.capacity(), 0);
    }
}
