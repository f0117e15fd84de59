//! The [`Broker`] seam: where an encoded event goes between [`Hub::publish_inbox`] /
//! [`Hub::publish_campaign`] and the subscribers.
//!
//! The hub encodes an event once, then hands it to its broker. The broker's job is to get it
//! to every node's hub (this one included), each of which fans it out to its local
//! connections through a [`HubDelivery`]. [`LocalBroker`], the default, does that in-process
//! and at once; a multi-node broker (Redis pub/sub, say) would send the bytes out in
//! [`Broker::publish`] and call [`HubDelivery::deliver`] from its receiving task, using
//! [`Broker::stream_opened`] / [`Broker::stream_closed`] to (un)subscribe upstream.
//!
//! [`Hub::publish_inbox`]: super::Hub::publish_inbox
//! [`Hub::publish_campaign`]: super::Hub::publish_campaign

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};

use misar_proto::auth::AccountId;
use misar_proto::event::EncodedEvent;
use misar_proto::route::CampaignId;
use misar_proto::streams::PublishError;

use super::{HubInner, PublishReport, StreamKey};

/// The future a [`Broker::publish`] returns.
pub type BrokerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<PublishReport, BrokerError>> + Send + 'a>>;

/// The future a [`Broker::ready`] returns.
pub type ReadyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send + 'a>>;

/// The future a [`Broker::revoke`] returns.
pub type RevokeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send + 'a>>;

/// A revocation that must reach every node ([`Hub::revoke_everywhere`](super::Hub::revoke_everywhere)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Revocation {
    /// The account's key was revoked: its connections close with 4401
    /// (as [`Hub::revoke`](super::Hub::revoke)).
    Account(AccountId),
    /// The campaign's ownership changed: its connections close with 4403
    /// (as [`Hub::revoke_campaign`](super::Hub::revoke_campaign)).
    Campaign(CampaignId),
}

/// Where a hub sends what it publishes; it delivers to the subscribers of every hub attached
/// to it.
///
/// `attach`, `stream_opened` and `stream_closed` are called while the hub holds a lock (the
/// stream's): they must return quickly, must not block, and must not call back into the hub
/// (queue the work for a task instead). Calls for one stream come in order (opened, closed,
/// opened, ...).
pub trait Broker: Send + Sync + 'static {
    /// A hub was built on this broker ([`Hub::with_broker`](super::Hub::with_broker));
    /// events for it go to `delivery`. Called once per hub.
    fn attach(&self, delivery: HubDelivery);

    /// Sends an event, encoded once, to every attached hub's subscribers of `stream`
    /// (possibly on other nodes). The report says what is known when it returns: the
    /// deliveries made during the call, and for a broker that delivers later (on each node,
    /// when its upstream hands the event back) [`PublishReport::accepted_by`] the nodes it
    /// went to.
    fn publish(&self, stream: StreamKey, event: EncodedEvent) -> BrokerFuture<'_>;

    /// The first subscriber of `stream` on an attached hub arrived (a remote broker
    /// subscribes upstream). Default: nothing.
    fn stream_opened(&self, stream: &StreamKey) {
        let _ = stream;
    }

    /// Resolves once an event published anywhere from now on reaches this node's subscribers
    /// of `stream` (a remote broker: its upstream subscription is confirmed), or fails when
    /// that cannot be promised soon (the broker's upstream is unreachable). Called after a
    /// subscribe opened the stream ([`Feed::ready`](super::Feed::ready)), before the upgrade
    /// is answered, so a client accepted misses nothing published after its 101. Not called
    /// under a hub's lock. Default: ready at once (an in-process broker delivers every
    /// publish to every attached hub).
    fn ready<'a>(&'a self, stream: &'a StreamKey) -> ReadyFuture<'a> {
        let _ = stream;
        Box::pin(async { Ok(()) })
    }

    /// The last subscriber of `stream` on an attached hub left. Default: nothing.
    fn stream_closed(&self, stream: &StreamKey) {
        let _ = stream;
    }

    /// Sends a revocation to every attached hub (on every node), each of which applies it
    /// with [`HubDelivery::revoke`]. Called by [`Hub::revoke_everywhere`](super::Hub::revoke_everywhere)
    /// after it revoked locally.
    ///
    /// Default: an error, so a broker that spans nodes but forgot this method does not let a
    /// revocation pass for propagated when it was not.
    fn revoke(&self, revocation: Revocation) -> RevokeFuture<'_> {
        let _ = revocation;
        Box::pin(async {
            Err(BrokerError::new(
                "this broker does not propagate revocations",
            ))
        })
    }

    /// Whether this broker keeps §2.11's offsets and history (so a client resumes on any
    /// node): it then delivers with [`HubDelivery::deliver_at`] (the broker's offsets) and
    /// decides every opted-in subscriber's start in [`resume`](Self::resume). Default:
    /// `false`, the hub numbers events and keeps the history itself.
    fn keeps_history(&self) -> bool {
        false
    }

    /// An opted-in connection subscribed to `stream` asking for `request` (only called when
    /// [`keeps_history`](Self::keeps_history)). It has joined the stream: live events queue
    /// in its session, unsent, until `start` is completed with the broker's decision
    /// ([`PendingResume::complete`]); the session drops the overlap between the replay and
    /// the live events. Called under the hub's locks like `stream_opened`: spawn the work.
    /// Default: [`PendingResume::fail`].
    fn resume(
        &self,
        stream: StreamKey,
        request: misar_proto::resume::ResumeRequest,
        start: PendingResume,
    ) {
        let _ = (stream, request);
        start.fail();
    }
}

/// An opted-in connection waiting for its broker's recovery decision
/// ([`Broker::resume`]). Dropping it without an answer is [`fail`](Self::fail).
pub struct PendingResume {
    conn: Option<Arc<super::Conn>>,
    hub: Weak<HubInner>,
    stream: StreamKey,
}

impl PendingResume {
    pub(super) fn new(conn: Arc<super::Conn>, hub: Weak<HubInner>, stream: StreamKey) -> Self {
        Self {
            conn: Some(conn),
            hub,
            stream,
        }
    }

    /// Starts the connection with the broker's decision: the `resume` frame, the missed
    /// events (in their opted-in encoding, in order), the late-joiner event (see
    /// [`ServerSession::start_resume`](misar_proto::server::ServerSession::start_resume)).
    /// Build the decision with [`misar_proto::resume::decide`].
    pub fn complete(
        mut self,
        recovery: &misar_proto::resume::Recovery,
        replay: Vec<EncodedEvent>,
        first: Option<EncodedEvent>,
    ) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let now = super::now();
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        hub.count_recovery(recovery, replay.len());
        let mut start = Some((replay, first));
        // Under the stream's lock: the stream follows the decision's epoch (closing the
        // connections of an older one), and no event is delivered between the two.
        hub.table.with_stream(&self.stream, false, |stream| {
            hub.follow_epoch(stream, &recovery.frame.epoch, now);
            if let Some((replay, first)) = start.take() {
                conn.start_resume(&recovery.frame, replay, first, now);
            }
        });
        if let Some((replay, first)) = start {
            // The stream is gone: the connection left meanwhile.
            conn.start_resume(&recovery.frame, replay, first, now);
        }
    }

    /// The stream the connection subscribed to.
    pub fn stream(&self) -> &StreamKey {
        &self.stream
    }

    /// The broker could not decide (its history is unreachable): the connection closes
    /// with 1011 and the client comes back later.
    pub fn fail(mut self) {
        if let Some(conn) = self.conn.take() {
            conn.fail_resume(super::now());
        }
    }
}

impl Drop for PendingResume {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.fail_resume(super::now());
        }
    }
}

impl std::fmt::Debug for PendingResume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingResume").finish_non_exhaustive()
    }
}

/// A broker could not publish, or the stream refused the event (a finished campaign).
#[derive(Debug, thiserror::Error)]
#[error("broker failed: {message}")]
pub struct BrokerError {
    message: String,
    /// The core's refusal, when the event reached the stream's state and was refused there.
    refusal: Option<PublishError>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BrokerError {
    /// An error described by `message` (no secrets, please: it may be logged).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            refusal: None,
            source: None,
        }
    }

    /// The stream refused the event (e.g. [`PublishError::Finished`], decided where the
    /// stream's state is: a hub's table, or Redis for a multi-node broker); `publish_*`
    /// report it as [`super::PublishError::Refused`].
    pub fn refused(refusal: PublishError) -> Self {
        Self {
            message: refusal.to_string(),
            refusal: Some(refusal),
            source: None,
        }
    }

    /// The stream's refusal, if that is what this is.
    pub fn refusal(&self) -> Option<&PublishError> {
        self.refusal.as_ref()
    }

    /// An error with an underlying cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            refusal: None,
            source: Some(Box::new(source)),
        }
    }
}

/// A hub's receiving side, handed to its broker by [`Broker::attach`].
///
/// Holds the hub weakly: a broker does not keep a dropped hub alive, and delivering to one is
/// a no-op.
#[derive(Clone)]
pub struct HubDelivery {
    pub(super) hub: Weak<HubInner>,
}

impl HubDelivery {
    /// Queues `event` for every local subscriber of `stream` (and, for a campaign, keeps its
    /// latest `progress` or terminal event for late joiners). No per-recipient copy: each
    /// connection gets a refcounted clone of the same bytes.
    ///
    /// Refused with [`PublishError::Finished`] when this hub knows the campaign finished
    /// (nothing is delivered); a broker that publishes through this (the in-process one)
    /// reports that as [`BrokerError::refused`]. `event` must have been validated for
    /// `stream` ([`misar_proto::streams::validate_relayed`] for bytes from elsewhere).
    pub fn deliver(
        &self,
        stream: &StreamKey,
        event: EncodedEvent,
    ) -> Result<PublishReport, PublishError> {
        match self.hub.upgrade() {
            Some(hub) => hub.deliver(stream, event, false, None),
            None => Ok(PublishReport::default()),
        }
    }

    /// [`deliver`](Self::deliver) at the broker's `offset` (§2.11, for a broker that
    /// [`keeps_history`](Broker::keeps_history)): opted-in subscribers get the event with
    /// `,"offset":N`. Refused with [`PublishError::StaleOffset`] when `offset` is not above
    /// the stream's latest on this hub (a duplicate: nothing is delivered).
    pub fn deliver_at(
        &self,
        stream: &StreamKey,
        event: EncodedEvent,
        offset: u64,
    ) -> Result<PublishReport, PublishError> {
        match self.hub.upgrade() {
            Some(hub) => hub.deliver(stream, event, false, Some(offset)),
            None => Ok(PublishReport::default()),
        }
    }

    /// [`deliver_at`](Self::deliver_at) in the broker's `epoch` for the stream (§2.11): when
    /// it is not the epoch the hub's stream followed so far, the broker's history behind the
    /// old one is gone; the stream restarts with the new epoch's offsets, and its opted-in
    /// connections that hold a position of the old epoch close with 1001 (they resume and are
    /// told `recovered: false`). Plain subscribers are not touched.
    pub fn deliver_in(
        &self,
        stream: &StreamKey,
        event: EncodedEvent,
        epoch: &misar_proto::resume::Epoch,
        offset: u64,
    ) -> Result<PublishReport, PublishError> {
        match self.hub.upgrade() {
            Some(hub) => hub.deliver_in(stream, event, false, Some(offset), Some(epoch)),
            None => Ok(PublishReport::default()),
        }
    }

    /// [`deliver_latest`](Self::deliver_latest) for a broker that keeps the history: the
    /// fetched event's position is given as in [`deliver_in`](Self::deliver_in) (and it is
    /// refused as [`PublishError::StaleOffset`] when the hub's stream is past it already).
    pub fn deliver_latest_in(
        &self,
        stream: &StreamKey,
        event: EncodedEvent,
        epoch: &misar_proto::resume::Epoch,
        offset: u64,
    ) -> Result<PublishReport, PublishError> {
        match self.hub.upgrade() {
            Some(hub) => hub.deliver_in(stream, event, true, Some(offset), Some(epoch)),
            None => Ok(PublishReport::default()),
        }
    }

    /// Like [`deliver`](Self::deliver), for an event fetched from a shared cache rather than
    /// received in stream order (a multi-node broker catching a hub up on a campaign's latest
    /// `progress` or terminal event): skipped when the hub already caches exactly these bytes
    /// as the campaign's latest event, so its subscribers do not get it twice.
    pub fn deliver_latest(
        &self,
        stream: &StreamKey,
        event: EncodedEvent,
    ) -> Result<PublishReport, PublishError> {
        match self.hub.upgrade() {
            Some(hub) => hub.deliver(stream, event, true, None),
            None => Ok(PublishReport::default()),
        }
    }

    /// Applies a revocation to this hub's connections (what [`Hub::revoke`] or
    /// [`Hub::revoke_campaign`] do locally).
    ///
    /// [`Hub::revoke`]: super::Hub::revoke
    /// [`Hub::revoke_campaign`]: super::Hub::revoke_campaign
    pub fn revoke(&self, revocation: &Revocation) {
        if let Some(hub) = self.hub.upgrade() {
            hub.revoke(revocation);
        }
    }

    /// Tells the hub that events may have been lost on the way to it (a multi-node broker lost
    /// its subscription and re-established it): counted in [`HubStats::gaps`](super::HubStats::gaps).
    /// With a broker that [`keeps_history`](Broker::keeps_history), the opted-in connections
    /// that hold a position also close with 1001: a gap would be silent for them, so they
    /// resume from the broker's history instead (on this node once it is back, or another).
    pub fn report_gap(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.gaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if hub.broker.keeps_history() {
                hub.close_resuming();
            }
        }
    }

    /// Whether the hub still exists.
    pub fn is_alive(&self) -> bool {
        self.hub.strong_count() > 0
    }
}

impl std::fmt::Debug for HubDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubDelivery")
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// The in-process broker: [`publish`](Broker::publish) delivers at once to every hub attached
/// to it. [`Hub::new`](super::Hub::new) builds one per hub; share one between several hubs
/// (with [`Hub::with_broker`](super::Hub::with_broker)) and they behave like nodes of one
/// deployment.
#[derive(Debug, Default)]
pub struct LocalBroker {
    hubs: RwLock<Vec<HubDelivery>>,
}

impl LocalBroker {
    /// A broker with no hub attached yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn deliver_all(
        &self,
        stream: &StreamKey,
        event: EncodedEvent,
    ) -> Result<PublishReport, BrokerError> {
        let hubs = self
            .hubs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut total = PublishReport::default();
        for hub in hubs.iter() {
            // Hubs sharing this broker saw the same publishes, so they agree on whether a
            // campaign is finished: the first refusal is everyone's.
            let report = hub
                .deliver(stream, event.clone())
                .map_err(BrokerError::refused)?;
            total.delivered = total.delivered.saturating_add(report.delivered);
            total.overflowed = total.overflowed.saturating_add(report.overflowed);
        }
        Ok(total)
    }
}

impl Broker for LocalBroker {
    fn attach(&self, delivery: HubDelivery) {
        let mut hubs = self
            .hubs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget hubs that are gone, so a long-lived broker does not accumulate them.
        hubs.retain(HubDelivery::is_alive);
        hubs.push(delivery);
    }

    fn publish(&self, stream: StreamKey, event: EncodedEvent) -> BrokerFuture<'_> {
        Box::pin(async move { self.deliver_all(&stream, event) })
    }

    fn revoke(&self, revocation: Revocation) -> RevokeFuture<'_> {
        let hubs = self
            .hubs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for hub in hubs.iter() {
            hub.revoke(&revocation);
        }
        Box::pin(async { Ok(()) })
    }
}

/// A new [`LocalBroker`] as a trait object.
pub(super) fn local() -> Arc<dyn Broker> {
    Arc::new(LocalBroker::new())
}
