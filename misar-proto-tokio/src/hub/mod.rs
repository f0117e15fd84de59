//! The in-process fan-out hub (§2.7–§2.9) and the [`Broker`] seam for multi-node fan-out.
//!
//! ```text
//!  publish_inbox / publish_campaign        mark() … hooks … subscribe(Accepted, mark) ──► Feed
//!        │ validate, encode ONCE (core)                  (session created here)      │
//!        ▼                                                                           ▼
//!     Broker ──(LocalBroker: at once; Redis: via other nodes)──► HubDelivery::deliver  serve_connection
//!                                 one stream's lock: core Stream::publish → recipients ─┘ session.enqueue
//! ```
//!
//! The hub is a thin shell over the core's fan-out table ([`misar_proto::streams`]): every
//! decision (limits, late joiners, finished campaigns, revocation, publish validation) is the
//! core's; the hub holds the locks (one per stream, one for the registry), the wake-ups and
//! the broker seam.
//!
//! - **Encode once**: a publish serializes the event once ([`HubStats::encodes`] counts it);
//!   every connection gets a refcounted clone of the same bytes.
//! - **Per-connection queues**: each connection's queue is its session's (see
//!   [`misar_proto::server`]): bounded in events and bytes, `progress` coalesced, ordinary and
//!   terminal events never dropped or reordered, overflow → that connection alone closes with
//!   1013. A publish never waits for a connection.
//! - **Order**: a stream's fan-out happens under that stream's lock, so every connection of a
//!   stream sees its events in one order, the publish order; other streams are not held up.
//! - **Late joiners**: the latest `progress` or terminal event of the last
//!   [`HubConfig::last_progress_cache`] campaigns updated is kept; a new subscriber of such a
//!   campaign gets it first (after a terminal one its session closes with 1000).
//! - **Finished campaigns** (§2.13): after a terminal event, publishes to the campaign are
//!   refused with [`misar_proto::streams::PublishError::Finished`] and the terminal event is
//!   never replaced.
//! - **Size** (§2.13): an event over [`HubConfig::max_event_bytes`] is refused at publish.
//! - **Limits** (§2.8) are counted exactly: [`Hub::subscribe`] counts a connection, dropping its
//!   [`Feed`] uncounts it.
//! - **Resume** (§2.11): every event gets an offset (one clock per hub, in an epoch drawn
//!   when the hub is built, so a restart is honestly `recovered: false`) and joins its
//!   stream's bounded history ([`HubConfig::history`]). A connection that opted in
//!   ([`Accepted::resume`]) gets the `resume` frame first, then what it missed, then live
//!   events, each with `,"offset":N` (built once per event); the others get the plain bytes.
//!   A [`Broker`] that keeps offsets and history itself ([`Broker::keeps_history`], e.g.
//!   Redis) numbers the events and decides recoveries instead, so a client resumes on any
//!   node.
//! - **Control**: [`Hub::revoke`] (4401), [`Hub::revoke_campaign`] (4403) and
//!   [`Hub::shutdown`] (1001, then a bounded wait) reach a connection even when its queue is
//!   full; a handshake whose hooks ran before a revocation (take [`Hub::mark`] before them) is
//!   closed at once when it subscribes after it.
//!
//! # Example
//!
//! ```
//! use misar_proto::auth::AccountId;
//! use misar_proto::event::{EmailReceived, InboxEvent, Timestamp};
//! use misar_proto_tokio::hub::{Hub, HubConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new(HubConfig::default());
//! // In a handler: `let mark = hub.mark();` before the hooks, then
//! // `let feed = hub.subscribe(accepted, mark, &ServerConfig::default())?;` before the upgrade,
//! // then `serve_connection(transport, feed, DriverConfig::default())` after it.
//! let event = InboxEvent::EmailReceived(EmailReceived::new(
//!     "ada@example.com",
//!     "Hello",
//!     Timestamp::parse("2026-05-27T10:15:00Z")?,
//! ));
//! let report = hub.publish_inbox(&AccountId::new("acct-1"), &event).await?;
//! assert_eq!(report.delivered, 0); // nobody is connected
//! assert_eq!(hub.stats().encodes, 1);
//! # Ok(())
//! # }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(example()).unwrap();
//! ```

mod broker;
mod feed;
#[cfg(feature = "redis")]
pub mod redis;
mod table;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use misar_proto::auth::AccountId;
use misar_proto::close::{CloseCode, CloseFrame};
use misar_proto::event::{CampaignEvent, EncodedEvent, InboxEvent};
use misar_proto::handshake::Accepted;
use misar_proto::resume::Epoch;
use misar_proto::route::CampaignId;
use misar_proto::server::{ServerConfig, ServerSession};
use misar_proto::streams::{
    CacheOrder, HistoryConfig, HistoryIndex, PublishRules, Registry, StreamsConfig,
    StreamsConfigError, validate_campaign, validate_inbox,
};
use tokio::sync::Notify;

pub use broker::{
    Broker, BrokerError, BrokerFuture, HubDelivery, LocalBroker, PendingResume, ReadyFuture,
    Revocation, RevokeFuture,
};
pub use feed::Feed;
pub use misar_proto::streams::{RevocationMark, StreamKey, SubscribeError};

pub(crate) use feed::lock;
use feed::{Conn, Outcome};
use table::Table;

use crate::metrics::record;

/// The current instant on tokio's clock (so a paused test clock applies), as the core takes it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A fresh epoch (§2.11): 16 hex digits no other process or hub is likely to draw (the
/// wall clock, the process id and a counter, hashed with a random key).
pub fn draw_epoch() -> Epoch {
    use std::hash::{BuildHasher, Hasher};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::hash::RandomState::new().build_hasher();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(wall.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    let text = format!("{:016x}", hasher.finish());
    // 16 hex digits are a valid epoch.
    Epoch::new(&text).unwrap_or_else(|_| unreachable!("hex digits are a valid epoch"))
}

/// Settings of a [`Hub`]. `Default` gives safe values (write `HubConfig { max_connections: 50_000,
/// ..HubConfig::default() }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// Connections one account may hold at once on this hub (100); more →
    /// [`SubscribeError::TooManyForAccount`] (HTTP 429). Per node: with a multi-node broker an
    /// account may hold this many on each node (README, "Running several nodes", says why).
    pub max_connections_per_account: usize,
    /// Connections the hub serves at once (10,000); more →
    /// [`SubscribeError::TooManyConnections`] (HTTP 503 with `Retry-After`).
    pub max_connections: usize,
    /// The `Retry-After` suggested when the hub is full or shutting down (5 s).
    pub retry_after: Duration,
    /// How many campaigns' latest `progress` (or terminal event) are kept for late joiners
    /// (1024); the least recently updated is forgotten first (and with it whether it
    /// finished). 0 disables the cache.
    pub last_progress_cache: usize,
    /// The largest encoded event a publish accepts (64 KiB, §2.13); larger ones are refused
    /// with [`misar_proto::streams::PublishError::TooLarge`]. Keep it below the connections'
    /// write bound (the adapters' WebSocket settings allow far more).
    pub max_event_bytes: usize,
    /// The grace an adapter should pass to [`Hub::shutdown`] (10 s). The hub itself does not
    /// use it.
    pub shutdown_grace: Duration,
    /// The history kept for resuming clients (§2.11): the last 256 events and 10 minutes per
    /// stream, 64 MiB over all streams (oldest first). Ignored when the broker keeps the
    /// history ([`Broker::keeps_history`]).
    pub history: HistoryConfig,
}

impl Default for HubConfig {
    fn default() -> Self {
        let table = StreamsConfig::default();
        Self {
            max_connections_per_account: table.max_connections_per_account,
            max_connections: table.max_connections,
            retry_after: table.retry_after,
            last_progress_cache: table.last_event_cache,
            max_event_bytes: table.publish.max_event_bytes,
            shutdown_grace: Duration::from_secs(10),
            history: table.history,
        }
    }
}

impl HubConfig {
    /// The core table's settings these amount to.
    pub fn streams_config(&self) -> StreamsConfig {
        StreamsConfig {
            max_connections_per_account: self.max_connections_per_account,
            max_connections: self.max_connections,
            retry_after: self.retry_after,
            last_event_cache: self.last_progress_cache,
            publish: PublishRules {
                max_event_bytes: self.max_event_bytes,
            },
            history: self.history.clone(),
            ..StreamsConfig::default()
        }
    }

    /// Checks that every setting can work (a limit of 0 would refuse everything).
    pub fn validate(&self) -> Result<(), StreamsConfigError> {
        self.streams_config().validate()
    }
}

/// What a publish did, as far as the publishing node knows when the call returns.
///
/// - In-process broker ([`Hub::new`]): every delivery happened during the call:
///   `delivered` counts them all, `receivers` is `None`.
/// - Redis ([`redis::RedisBroker`]): an `Ok` means Redis took the event (numbered it, kept it
///   in the history, published it); every node, this one included, delivers it when Redis
///   hands it back, after the call returned, so `delivered` is 0 and `receivers` says how
///   many nodes had subscribers of the stream at that moment (0: nobody anywhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishReport {
    /// Connections this call queued the event for.
    pub delivered: usize,
    /// Connections whose queue overflowed with this event: they now close with 1013.
    pub overflowed: usize,
    /// Nodes that were subscribed to the stream when a multi-node broker published the
    /// event; they deliver it after the call returns. `None` when the broker delivered
    /// everything during the call.
    pub receivers: Option<usize>,
}

impl PublishReport {
    /// The report of a multi-node broker that handed the event to `receivers` nodes (for a
    /// [`Broker`] implementation: nothing was delivered during the call).
    pub fn accepted_by(receivers: usize) -> Self {
        Self {
            delivered: 0,
            overflowed: 0,
            receivers: Some(receivers),
        }
    }
}

/// Why a publish failed. Nothing was sent to anyone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The core's rules refused it (§2.13): unknown type, another campaign's event, too
    /// large, or a finished campaign.
    #[error(transparent)]
    Refused(#[from] misar_proto::streams::PublishError),
    /// The broker failed.
    #[error(transparent)]
    Broker(BrokerError),
}

impl PublishError {
    /// The core's refusal, if that is what it is.
    pub fn refusal(&self) -> Option<&misar_proto::streams::PublishError> {
        match self {
            PublishError::Refused(refusal) => Some(refusal),
            PublishError::Broker(_) => None,
        }
    }
}

impl From<BrokerError> for PublishError {
    fn from(error: BrokerError) -> Self {
        match error.refusal() {
            Some(refusal) => PublishError::Refused(refusal.clone()),
            None => PublishError::Broker(error),
        }
    }
}

/// What [`Hub::shutdown`] observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections open when the shutdown began (each was told to close with 1001).
    pub connections: usize,
    /// Connections still open when the grace ran out; they were aborted (their drivers drop
    /// the transport at once).
    pub remaining: usize,
}

/// The hub's counters, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Events serialized by publishes on this hub: one per publish that passed validation,
    /// whatever the number of recipients (a finished campaign's stream may still refuse it).
    pub encodes: u64,
    /// Deliveries: events queued for a connection (one per connection per event).
    pub delivered: u64,
    /// Connections closed with 1013 because their queue overflowed.
    pub overflowed: u64,
    /// Subscriptions refused by a limit or by the shutdown.
    pub refused: u64,
    /// Connections open now.
    pub connections: usize,
    /// Streams with local subscribers or a cached event.
    pub streams: usize,
    /// Campaigns with a cached latest event.
    pub cached_campaigns: usize,
    /// Times the broker reported that events may have been lost on their way to this hub
    /// ([`HubDelivery::report_gap`]; e.g. a Redis subscription dropped and was re-established).
    /// Always 0 with the in-process broker.
    pub gaps: u64,
    /// Payload bytes of the history held for resuming clients (§2.11), over every stream.
    pub history_bytes: usize,
    /// Streams holding history.
    pub history_streams: usize,
    /// Opted-in connections that resumed with `recovered: true` from a position.
    pub recovered: u64,
    /// Opted-in connections told `recovered: false`.
    pub not_recovered: u64,
}

/// The fan-out hub: cheap to clone (an `Arc` inside), share it between the publisher and the
/// connection handlers. See the [module docs](self).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

/// The hub's shared state.
pub(crate) struct HubInner {
    config: HubConfig,
    rules: PublishRules,
    broker: Arc<dyn Broker>,
    table: Table,
    /// The epoch of this hub's offsets (drawn when it was built).
    epoch: Epoch,
    /// The history bounds in force (none when the broker keeps the history).
    history: HistoryConfig,
    /// Woken when the last connection goes (for the shutdown's wait).
    idle: Notify,
    encodes: AtomicU64,
    delivered: AtomicU64,
    overflowed: AtomicU64,
    refused: AtomicU64,
    gaps: AtomicU64,
    recovered: AtomicU64,
    not_recovered: AtomicU64,
}

impl Hub {
    /// A hub with its own in-process broker ([`LocalBroker`]).
    ///
    /// `config` is taken as it is (a limit of 0 refuses everything); [`Hub::try_new`] refuses
    /// such a configuration instead.
    pub fn new(config: HubConfig) -> Hub {
        Self::with_broker(config, broker::local())
    }

    /// [`Hub::new`], refusing a configuration that cannot work.
    pub fn try_new(config: HubConfig) -> Result<Hub, StreamsConfigError> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// [`Hub::with_broker`], refusing a configuration that cannot work.
    pub fn try_with_broker(
        config: HubConfig,
        broker: Arc<dyn Broker>,
    ) -> Result<Hub, StreamsConfigError> {
        config.validate()?;
        Ok(Self::with_broker(config, broker))
    }

    /// A hub that publishes through `broker`, which delivers back to it (and to the other
    /// hubs attached to it).
    pub fn with_broker(config: HubConfig, broker: Arc<dyn Broker>) -> Hub {
        let streams = config.streams_config();
        // Marks of one hub are refused by another (a per-process counter tells them apart).
        static NEXT_HUB: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_HUB.fetch_add(1, Ordering::Relaxed);
        let history = if broker.keeps_history() {
            HistoryConfig::none()
        } else {
            streams.history.clone()
        };
        let inner = Arc::new(HubInner {
            rules: streams.publish,
            table: Table::new(
                Registry::with_id(&streams, id),
                CacheOrder::new(streams.last_event_cache),
                HistoryIndex::new(history.clone()),
                !broker.keeps_history(),
            ),
            epoch: draw_epoch(),
            history,
            config,
            broker: Arc::clone(&broker),
            idle: Notify::new(),
            encodes: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            not_recovered: AtomicU64::new(0),
        });
        broker.attach(HubDelivery {
            hub: Arc::downgrade(&inner),
        });
        Hub { inner }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The epoch of this hub's offsets (§2.11), drawn when it was built. With a broker that
    /// keeps the history, each stream's epoch is the broker's instead.
    pub fn epoch(&self) -> &Epoch {
        &self.inner.epoch
    }

    /// Publishes an event to `account`'s inbox connections. Refused (nothing is sent): an
    /// [`InboxEvent::Unknown`], an event over [`HubConfig::max_event_bytes`].
    pub async fn publish_inbox(
        &self,
        account: &AccountId,
        event: &InboxEvent,
    ) -> Result<PublishReport, PublishError> {
        let encoded = validate_inbox(event, &self.inner.rules)?;
        let kind = event.known_type_name().unwrap_or("unknown");
        self.publish_encoded(StreamKey::Inbox(account.clone()), encoded, kind)
            .await
    }

    /// Publishes an event to `campaign`'s connections (and keeps it for late joiners if it is
    /// a `progress` or a terminal event). Refused (nothing is sent): a
    /// [`CampaignEvent::Unknown`], an event whose `campaignId` is not `campaign`, an event
    /// over [`HubConfig::max_event_bytes`], and any event once the campaign's terminal event
    /// was published ([`misar_proto::streams::PublishError::Finished`]).
    pub async fn publish_campaign(
        &self,
        campaign: &CampaignId,
        event: &CampaignEvent,
    ) -> Result<PublishReport, PublishError> {
        let encoded = validate_campaign(campaign, event, &self.inner.rules)?;
        let kind = event.known_type_name().unwrap_or("unknown");
        self.publish_encoded(StreamKey::Campaign(campaign.clone()), encoded, kind)
            .await
    }

    async fn publish_encoded(
        &self,
        stream: StreamKey,
        event: EncodedEvent,
        kind: &'static str,
    ) -> Result<PublishReport, PublishError> {
        self.inner.encodes.fetch_add(1, Ordering::Relaxed);
        let channel = crate::metrics::channel_label(&stream);
        let report = self.inner.broker.publish(stream, event).await?;
        record::published(channel, kind);
        Ok(report)
    }

    /// A mark to take **before** a handshake's hooks run, for [`subscribe`](Self::subscribe):
    /// a revocation of the account or campaign after it closes the connection at once
    /// (§2.13), however the hook's answer and the revocation raced.
    pub fn mark(&self) -> RevocationMark {
        lock(&self.inner.table.registry).mark()
    }

    /// Registers a connection for `accepted`'s channel and creates its session (with
    /// `config`); call it before the upgrade, so a refusal can still be an HTTP answer (429 /
    /// 503 with `Retry-After`). `mark` is [`Hub::mark`], taken before the hooks ran. The
    /// returned [`Feed`] counts against the limits until it is dropped.
    ///
    /// From now on events are queued into the session (a campaign's cached latest event
    /// first). If the account or campaign was revoked after `mark`, the session is already
    /// closing with 4401/4403 and gets nothing else.
    pub fn subscribe(
        &self,
        accepted: Accepted,
        mark: RevocationMark,
        config: &ServerConfig,
    ) -> Result<Feed, SubscribeError> {
        let inner = &self.inner;
        let now = now();
        let account = accepted.account().clone();
        let Some(stream) = StreamKey::for_channel(&account, accepted.channel()) else {
            inner.refused.fetch_add(1, Ordering::Relaxed);
            return Err(SubscribeError::UnsupportedChannel);
        };
        let resume = accepted.resume().cloned();
        let conn = Conn::new(ServerSession::new(accepted, config.clone(), now));
        let admitted =
            lock(&inner.table.registry).admit(&account, &stream, mark, Arc::clone(&conn), now);
        let admission = match admitted {
            Ok(admission) => admission,
            Err(refusal) => {
                inner.refused.fetch_add(1, Ordering::Relaxed);
                return Err(refusal);
            }
        };
        // The feed exists from here on, so an early return still unregisters (and its drop
        // takes the gauge down again).
        record::connection_opened(crate::metrics::channel_label(&stream));
        let feed = Feed {
            conn: Arc::clone(&conn),
            hub: Arc::clone(inner),
            id: admission.id,
            account,
            stream,
        };
        let mut revoked = admission.revoked;
        let broker_resumes = resume.is_some() && inner.broker.keeps_history();
        let joined = inner.table.with_stream(&feed.stream, true, |table_stream| {
            let joined = table_stream.join_as(feed.id, Arc::clone(&conn), resume.is_some());
            if joined.opened {
                inner.broker.stream_opened(&feed.stream);
            }
            if revoked.is_some() || broker_resumes {
                // Revoked: nothing is sent. The broker's history: it starts the session.
                return;
            }
            // Under the stream's lock, so no newer event can overtake these.
            match &resume {
                Some(request) => {
                    let start = table_stream.recover(request, &inner.epoch, now, &inner.history);
                    lock(&inner.table.history).apply(&feed.stream, start.history);
                    inner.count_recovery(&start.recovery, start.replay.len());
                    let _ = lock(conn.session()).start_resume(
                        &start.recovery.frame,
                        start.replay,
                        start.first,
                        now,
                    );
                }
                None => {
                    if let Some(first) = &joined.first {
                        let _ = lock(conn.session()).enqueue(first.clone(), now);
                    }
                }
            }
        });
        debug_assert!(joined.is_some(), "with_stream creates the stream");
        if let (true, Some(request), None) = (broker_resumes, &resume, revoked) {
            inner.broker.resume(
                feed.stream.clone(),
                request.clone(),
                PendingResume::new(
                    Arc::clone(&conn),
                    Arc::downgrade(inner),
                    feed.stream.clone(),
                ),
            );
        }
        if revoked.is_none() && matches!(feed.stream, StreamKey::Campaign(_)) {
            // A campaign revocation between the admission and the join reached the stream
            // before this connection did: ask again (an account's cannot slip through, the
            // registry lists the connection from the admission on).
            let judged =
                lock(&inner.table.registry).revoked_since(mark, &feed.account, &feed.stream);
            match judged {
                Ok(code) => revoked = code,
                Err(_) => {
                    // A flood of revocations pushed the mark out of memory in between: it can
                    // no longer be judged, so the client is asked to come back (1013).
                    lock(conn.session()).close(CloseFrame::new(CloseCode::TryAgainLater), now);
                }
            }
        }
        if let Some(code) = revoked {
            conn.revoke(code, now);
        }
        Ok(feed)
    }

    /// Closes every connection of `account` with 4401 (its key was revoked), and every
    /// connection whose handshake began before this call and subscribes after it. Queued
    /// events are discarded: nothing more reaches a client that lost its rights.
    ///
    /// This hub only; [`revoke_everywhere`](Self::revoke_everywhere) reaches every node.
    pub fn revoke(&self, account: &AccountId) {
        self.inner.revoke(&Revocation::Account(account.clone()));
    }

    /// Closes every connection to `campaign` with 4403 (its ownership changed), and every
    /// connection whose handshake began before this call and subscribes after it.
    ///
    /// This hub only; [`revoke_everywhere`](Self::revoke_everywhere) reaches every node.
    pub fn revoke_campaign(&self, campaign: &CampaignId) {
        self.inner.revoke(&Revocation::Campaign(campaign.clone()));
    }

    /// Applies `revocation` here at once (as [`revoke`](Self::revoke) /
    /// [`revoke_campaign`](Self::revoke_campaign)), then sends it through the broker to every
    /// node's hub. An error means the other nodes may not have it (this hub did apply it):
    /// retry, or make sure the key check refuses the key, so reconnects fail anyway.
    pub async fn revoke_everywhere(&self, revocation: Revocation) -> Result<(), BrokerError> {
        self.inner.revoke(&revocation);
        self.inner.broker.revoke(revocation).await
    }

    /// Graceful shutdown (§2.9): refuses new subscriptions, tells every connection to close
    /// with 1001, and waits until they are all gone or `grace` has passed; connections left
    /// then are aborted (their drivers drop the transport without further ado).
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let deadline = tokio::time::Instant::now().checked_add(grace);
        let connections = {
            let now = now();
            let mut registry = lock(&self.inner.table.registry);
            for connection in registry.begin_shutdown() {
                connection.shut_down(now);
            }
            registry.total()
        };
        let remaining = loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            // Registered before the count is read, so the last connection's wake-up cannot
            // slip between the two.
            idle.as_mut().enable();
            let count = self.connection_count();
            if count == 0 {
                break 0;
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, idle).await.is_err() {
                        break self.connection_count();
                    }
                }
                None => idle.await,
            }
        };
        if remaining > 0 {
            for connection in lock(&self.inner.table.registry).connections() {
                connection.abort();
            }
        }
        ShutdownReport {
            connections,
            remaining,
        }
    }

    /// Connections open now (subscribed and not yet dropped).
    pub fn connection_count(&self) -> usize {
        lock(&self.inner.table.registry).total()
    }

    /// Connections `account` holds now.
    pub fn account_connection_count(&self, account: &AccountId) -> usize {
        lock(&self.inner.table.registry).account_connections(account)
    }

    /// The counters.
    pub fn stats(&self) -> HubStats {
        let inner = &self.inner;
        // One lock at a time: a guard in the struct literal would live to its end, and a
        // second `lock` of the same mutex there would wait for itself.
        let cached_campaigns = lock(&inner.table.cache).len();
        let (history_bytes, history_streams) = {
            let history = lock(&inner.table.history);
            (history.bytes(), history.streams_with_history())
        };
        HubStats {
            encodes: inner.encodes.load(Ordering::Relaxed),
            delivered: inner.delivered.load(Ordering::Relaxed),
            overflowed: inner.overflowed.load(Ordering::Relaxed),
            refused: inner.refused.load(Ordering::Relaxed),
            connections: self.connection_count(),
            streams: inner.table.stream_count(),
            cached_campaigns,
            gaps: inner.gaps.load(Ordering::Relaxed),
            history_bytes,
            history_streams,
            recovered: inner.recovered.load(Ordering::Relaxed),
            not_recovered: inner.not_recovered.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl HubInner {
    /// Counts a recovery decision (with `replayed` missed events) for the stats and metrics.
    pub(crate) fn count_recovery(&self, recovery: &misar_proto::resume::Recovery, replayed: usize) {
        record::resumed(recovery.frame.recovered, replayed);
        if !recovery.frame.recovered {
            self.not_recovered.fetch_add(1, Ordering::Relaxed);
        } else if recovery.replay_after.is_some() {
            self.recovered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Fans an encoded event out to the local subscribers of `stream` (the broker calls this
    /// through [`HubDelivery`]) at `offset`, or at the hub's next offset when `None`; refused
    /// when the campaign is finished (or, with a broker's offset, when it is not above the
    /// stream's latest: a duplicate).
    fn deliver(
        &self,
        stream: &StreamKey,
        event: EncodedEvent,
        unless_cached: bool,
        offset: Option<u64>,
    ) -> Result<PublishReport, misar_proto::streams::PublishError> {
        self.deliver_in(stream, event, unless_cached, offset, None)
    }

    /// [`deliver`](Self::deliver), following the broker's `epoch` for the stream first (see
    /// [`follow_epoch`](Self::follow_epoch)).
    fn deliver_in(
        &self,
        stream: &StreamKey,
        event: EncodedEvent,
        unless_cached: bool,
        offset: Option<u64>,
        epoch: Option<&Epoch>,
    ) -> Result<PublishReport, misar_proto::streams::PublishError> {
        let now = now();
        // A stream is created to keep history, or a campaign's event for late joiners.
        let create = stream.keeps(event.class()) || self.history.max_events > 0;
        let mut evicted = Vec::new();
        let report = self.table.with_stream(stream, create, |table_stream| {
            if let Some(epoch) = epoch {
                if unless_cached && table_stream.epoch().is_some_and(|e| e != epoch) {
                    // A fetched latest event of another epoch than the stream follows: not
                    // newer than what the channel said (it only ever moves forward).
                    return Ok(PublishReport::default());
                }
                self.follow_epoch(table_stream, epoch, now);
            }
            if unless_cached
                && table_stream
                    .cached()
                    .is_some_and(|cached| cached.bytes() == event.bytes())
            {
                return Ok::<_, misar_proto::streams::PublishError>(PublishReport::default());
            }
            let offset = offset.unwrap_or_else(|| lock(&self.table.history).next_offset());
            let fanout = table_stream.publish(event, offset, now, &self.history)?;
            if !fanout.history.is_empty() {
                lock(&self.table.history).apply(stream, fanout.history);
            }
            if let (true, Some(campaign)) = (fanout.cached, stream.campaign()) {
                evicted = lock(&self.table.cache).touch(campaign);
            }
            let mut report = PublishReport::default();
            let plain = fanout.recipients.iter().map(|(_, c)| (c, &fanout.event));
            let resuming = fanout.resuming.iter().map(|(_, c)| (c, &fanout.resumable));
            for (connection, event) in plain.chain(resuming) {
                match connection.deliver(event, now) {
                    Outcome::Queued => report.delivered = report.delivered.saturating_add(1),
                    Outcome::Overflowed => {
                        report.overflowed = report.overflowed.saturating_add(1);
                    }
                    Outcome::Refused => {}
                }
            }
            Ok(report)
        });
        for campaign in evicted {
            self.table
                .with_stream(&StreamKey::Campaign(campaign), false, |s| s.forget_cached());
        }
        if report.is_none() && offset.is_none() {
            // Nobody listens and nothing is kept: only the offset is, so that a client
            // resuming later does not take a position before it for the latest.
            let mut history = lock(&self.table.history);
            let offset = history.next_offset();
            history.dropped(stream, offset);
        }
        self.expire_history(now);
        let report = report.unwrap_or(Ok(PublishReport::default()))?;
        self.delivered
            .fetch_add(report.delivered as u64, Ordering::Relaxed);
        self.overflowed
            .fetch_add(report.overflowed as u64, Ordering::Relaxed);
        record::delivered(crate::metrics::channel_label(stream), report.delivered);
        record::overflowed(report.overflowed);
        Ok(report)
    }

    /// Makes `stream` follow the broker's `epoch` (§2.11, a broker that keeps the history):
    /// when it differs from the one the stream followed, the broker's history behind it is
    /// gone, so the stream restarts (the new epoch's offsets start again) and every opted-in
    /// connection that holds a position of the old epoch closes with 1001, to resume and be
    /// told `recovered: false`. Connections still waiting for their broker's decision stay
    /// (it is taken in the new epoch). Called under the stream's lock.
    fn follow_epoch(
        &self,
        stream: &mut misar_proto::streams::Stream<Arc<Conn>>,
        epoch: &Epoch,
        now: Instant,
    ) {
        if stream.epoch() == Some(epoch) {
            return;
        }
        let had_one = stream.epoch().is_some();
        let change = stream.restart(epoch.clone());
        if !change.is_empty() {
            lock(&self.table.history).apply(stream.key(), change);
        }
        if had_one {
            for (_, connection) in stream.resuming() {
                if connection.resume_started() {
                    connection.shut_down(now);
                }
            }
        }
    }

    /// Closes with 1001 every opted-in connection that holds a position (its `resume` frame
    /// was queued): the broker may have missed events for it, which it would never learn
    /// from its offsets; it resumes from the broker's history instead.
    fn close_resuming(&self) {
        let now = now();
        for connection in lock(&self.table.registry).connections() {
            if connection.resume_started() {
                connection.shut_down(now);
            }
        }
    }

    /// Drops the history that is due (too old, or the oldest while over the byte budget),
    /// one stream lock at a time.
    fn expire_history(&self, now: Instant) {
        loop {
            let due = lock(&self.table.history).due(now);
            let Some((offset, key)) = due else {
                return;
            };
            let dropped = self.table.with_stream(&key, false, |stream| {
                let change = stream.drop_oldest(offset);
                if !change.is_empty() {
                    lock(&self.table.history).apply(&key, change);
                }
                !change.is_empty()
            });
            if dropped != Some(true) {
                // Another thread got there first, or the index is stale: stop for now (the
                // next publish tries again).
                return;
            }
        }
    }

    /// Closes the connections a revocation targets (4401 for an account, 4403 for a campaign),
    /// and remembers it for handshakes in flight.
    fn revoke(&self, revocation: &Revocation) {
        let now = now();
        match revocation {
            Revocation::Account(account) => {
                let mut registry = lock(&self.table.registry);
                for (_, connection) in registry.revoke_account(account, now) {
                    connection.revoke(CloseCode::Unauthorized, now);
                }
            }
            Revocation::Campaign(campaign) => {
                // The registry first: a handshake that joins the stream after the stream's
                // subscribers are closed below asks the registry again and finds this.
                lock(&self.table.registry).revoke_campaign(campaign, now);
                let key = StreamKey::Campaign(campaign.clone());
                self.table.with_stream(&key, false, |stream| {
                    for (_, connection) in stream.revoke() {
                        connection.revoke(CloseCode::Forbidden, now);
                    }
                });
            }
        }
    }

    /// Removes a connection (its [`Feed`] is being dropped).
    fn unregister(&self, feed: &Feed) {
        let remaining = {
            let mut registry = lock(&self.table.registry);
            let _ = registry.remove(&feed.account, feed.id);
            registry.total()
        };
        self.table.with_stream(&feed.stream, false, |stream| {
            let (_, left) = stream.leave(feed.id);
            if left.closed {
                self.broker.stream_closed(&feed.stream);
            }
        });
        if remaining == 0 {
            self.idle.notify_waiters();
        }
    }
}
