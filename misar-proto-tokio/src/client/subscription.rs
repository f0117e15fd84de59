//! [`Subscription`] (events only) and [`Updates`] (events plus connection news): two views of
//! one driver.
//!
//! Dependencies go one way: this module uses the [`driver`](super::driver), and both use the
//! items of [`update`](super::update).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{BoxStream, Fuse};
use futures_util::{Stream, StreamExt};
use misar_proto::client::ClientSession;
use misar_proto::event::Event;
use misar_proto::resume::Position;
use misar_proto::route::Channel;
use tokio::sync::watch;

use super::driver::Driver;
use super::update::{Item, Update};
use super::{ReconnectPolicy, SubscriptionError};

/// The driver behind both views, and the way to ask it to close.
struct Inner {
    channel: Channel,
    stream: Fuse<BoxStream<'static, Item>>,
    close: watch::Sender<bool>,
    /// The last position handed out (§2.11), kept from the items as they pass.
    position: Option<Position>,
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
            position: None,
        }
    }

    /// The next item, noting the position it carries.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let polled = self.stream.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(Update::Resumed { position })))
            | Poll::Ready(Some(Ok(Update::NotRecovered {
                position: Some(position),
            }))) => self.position = Some(position.clone()),
            Poll::Ready(Some(Ok(Update::Event {
                offset: Some(offset),
                ..
            }))) => {
                if let Some(position) = &mut self.position {
                    position.offset = *offset;
                }
            }
            _ => {}
        }
        polled
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

    /// The position of the last event (or resume answer) this subscription yielded (§2.11):
    /// keep it to resume a later run with [`Client::subscribe_from`](super::Client::subscribe_from).
    /// `None` before the server's first answer, or without resume.
    pub fn position(&self) -> Option<&Position> {
        self.inner.position.as_ref()
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
            match this.inner.poll_item(cx) {
                Poll::Ready(Some(Ok(Update::Event { event, .. }))) => {
                    return Poll::Ready(Some(Ok(event)));
                }
                // Never hidden: the one error that is not the last item.
                Poll::Ready(Some(Ok(Update::NotRecovered { position }))) => {
                    return Poll::Ready(Some(Err(SubscriptionError::NotRecovered { position })));
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

    /// The position of the last event (or resume answer) yielded; see
    /// [`Subscription::position`].
    pub fn position(&self) -> Option<&Position> {
        self.inner.position.as_ref()
    }

    /// Closes with 1000; see [`Subscription::close`].
    pub async fn close(&mut self) {
        self.inner.close().await;
    }
}

impl Stream for Updates {
    type Item = Result<Update, SubscriptionError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_item(cx)
    }
}

impl fmt::Debug for Updates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Updates")
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}
