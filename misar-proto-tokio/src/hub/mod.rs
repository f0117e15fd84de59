//! The in-process fan-out hub (§2.7–§2.9) and the [`Broker`] seam for multi-node fan-out.
//!
//! ```text
//!  publish_inbox / publish_campaign          subscribe(&Accepted) ──► Feed ──► serve_connection
//!        │ validate, encode ONCE                                        ▲
//!        ▼                                                              │ session.enqueue(clone)
//!     Broker ──(LocalBroker: at once; Redis: via other nodes)──► HubDelivery::deliver
//!                                                        per-stream state: subscribers, last event
//! ```
//!
//! - **Encode once**: a publish serializes the event once ([`HubStats::encodes`] counts it);
//!   every connection gets a refcounted clone of the same bytes.
//! - **Per-connection queues**: each connection's queue is its session's (see
//!   [`misar_proto::server`]): bounded in events and bytes, `progress` coalesced, ordinary and
//!   terminal events never dropped or reordered, overflow → that connection alone closes with
//!   1013. A publish never waits for a connection.
//! - **Order**: delivery happens under the hub's lock, so every connection of a stream sees
//!   the stream's events in one order, the publish order.
//! - **Late joiners**: the latest `progress` or terminal event of the last
//!   [`HubConfig::last_progress_cache`] campaigns updated is kept; a new subscriber of such a
//!   campaign gets it first (after a terminal one its session closes with 1000).
//! - **Limits** (§2.8) are counted exactly: [`Hub::subscribe`] counts a connection, dropping its
//!   [`Feed`] uncounts it.
//! - **Control**: [`Hub::revoke`] (4401), [`Hub::revoke_campaign`] (4403) and
//!   [`Hub::shutdown`] (1001, then a bounded wait) reach a connection even when its queue is
//!   full.
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
//! // In a handler: `let feed = hub.subscribe(&accepted)?;` before the upgrade, then
//! // `serve_connection(transport, session, feed, DriverConfig::default())` after it.
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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use misar_proto::auth::AccountId;
use misar_proto::close::CloseCode;
use misar_proto::event::{CampaignEvent, EncodedEvent, EventClass, InboxEvent};
use misar_proto::handshake::Accepted;
use misar_proto::route::{CampaignId, Channel};
use tokio::sync::Notify;

pub use broker::{
    Broker, BrokerError, BrokerFuture, HubDelivery, LocalBroker, Revocation, RevokeFuture,
};
pub use feed::Feed;

pub(crate) use feed::lock;
use feed::{Control, FeedShared, Limits, Outcome};

/// The current instant on tokio's clock (so a paused test clock applies), as the core takes it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// One stream of events: an account's inbox or one campaign.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamKey {
    /// The inbox of an account.
    Inbox(AccountId),
    /// One campaign's progress.
    Campaign(CampaignId),
}

/// Settings of a [`Hub`]. `Default` gives safe values (write `HubConfig { max_connections: 50_000,
/// ..HubConfig::default() }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// Events a [`Feed`] keeps between [`Hub::subscribe`] and `serve_connection` (the upgrade
    /// window), 256. More → the connection closes with 1013 once served. After that the
    /// session's own queue bounds (`ServerConfig::max_queued_events` / `max_queued_bytes`)
    /// apply.
    pub pending_events: usize,
    /// Payload bytes a [`Feed`] keeps before `serve_connection` (1 MiB).
    pub pending_bytes: usize,
    /// Connections one account may hold at once (100); more → [`SubscribeError::TooManyForAccount`]
    /// (HTTP 429).
    pub max_connections_per_account: usize,
    /// Connections the hub serves at once (10,000); more →
    /// [`SubscribeError::TooManyConnections`] (HTTP 503 with `Retry-After`).
    pub max_connections: usize,
    /// The `Retry-After` suggested when the hub is full or shutting down (5 s).
    pub retry_after: Duration,
    /// How many campaigns' latest `progress` (or terminal event) are kept for late joiners
    /// (1024); the least recently updated is forgotten first. 0 disables the cache.
    pub last_progress_cache: usize,
    /// The grace an adapter should pass to [`Hub::shutdown`] (10 s). The hub itself does not
    /// use it.
    pub shutdown_grace: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            pending_events: 256,
            pending_bytes: 1 << 20,
            max_connections_per_account: 100,
            max_connections: 10_000,
            retry_after: Duration::from_secs(5),
            last_progress_cache: 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What a publish did on the hubs the broker reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishReport {
    /// Connections the event was queued for.
    pub delivered: usize,
    /// Connections whose queue overflowed with this event: they now close with 1013.
    pub overflowed: usize,
}

/// Why a publish was refused. Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// An event of a type this version does not know: the server does not send what it
    /// cannot validate.
    #[error("refusing to publish an event of unknown type {kind:?}")]
    UnknownType {
        /// The event's `type`.
        kind: String,
    },
    /// A campaign event whose `campaignId` is not the campaign it was published to.
    #[error("the event is about campaign {found:?}, not {target:?}")]
    CampaignMismatch {
        /// The campaign published to.
        target: CampaignId,
        /// The event's `campaignId`.
        found: String,
    },
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why [`Hub::subscribe`] refused a connection (answer before the upgrade).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The account holds [`HubConfig::max_connections_per_account`] connections (HTTP 429).
    #[error("too many connections for this account (limit {limit})")]
    TooManyForAccount {
        /// The limit.
        limit: usize,
    },
    /// The hub serves [`HubConfig::max_connections`] connections (HTTP 503).
    #[error("too many connections (limit {limit})")]
    TooManyConnections {
        /// The limit.
        limit: usize,
        /// Suggested `Retry-After`.
        retry_after: Duration,
    },
    /// [`Hub::shutdown`] was called (HTTP 503).
    #[error("the server is shutting down")]
    ShuttingDown {
        /// Suggested `Retry-After`.
        retry_after: Duration,
    },
    /// A channel this version of the hub does not serve.
    #[error("unsupported channel")]
    UnsupportedChannel,
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
    /// Events serialized by publishes on this hub (one per accepted publish).
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
    broker: Arc<dyn Broker>,
    state: Mutex<HubState>,
    /// Woken when the last connection goes (for the shutdown's wait).
    idle: Notify,
    encodes: AtomicU64,
    delivered: AtomicU64,
    overflowed: AtomicU64,
    refused: AtomicU64,
    gaps: AtomicU64,
}

#[derive(Default)]
struct HubState {
    /// Everything per stream, in one place (§8 will add sequence numbers here).
    streams: HashMap<StreamKey, StreamState>,
    /// Each account's connections (for the per-account limit and revocation).
    accounts: HashMap<AccountId, Vec<Arc<FeedShared>>>,
    total: usize,
    shutting_down: bool,
    /// Cached campaigns by the tick of their last update, oldest first.
    cache_order: BTreeMap<u64, CampaignId>,
    tick: u64,
}

#[derive(Default)]
struct StreamState {
    subscribers: Vec<Arc<FeedShared>>,
    /// A campaign's latest `progress` or terminal event, and the tick it was cached at.
    last: Option<(EncodedEvent, u64)>,
}

impl Hub {
    /// A hub with its own in-process broker ([`LocalBroker`]).
    pub fn new(config: HubConfig) -> Hub {
        Self::with_broker(config, broker::local())
    }

    /// A hub that publishes through `broker`, which delivers back to it (and to the other
    /// hubs attached to it).
    pub fn with_broker(config: HubConfig, broker: Arc<dyn Broker>) -> Hub {
        let inner = Arc::new(HubInner {
            config,
            broker: Arc::clone(&broker),
            state: Mutex::new(HubState::default()),
            idle: Notify::new(),
            encodes: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
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

    /// Publishes an event to `account`'s inbox connections. An [`InboxEvent::Unknown`] is
    /// refused.
    pub async fn publish_inbox(
        &self,
        account: &AccountId,
        event: &InboxEvent,
    ) -> Result<PublishReport, PublishError> {
        if let InboxEvent::Unknown(unknown) = event {
            return Err(PublishError::UnknownType {
                kind: unknown.kind.clone(),
            });
        }
        let encoded = self.encode(|| event.encode());
        let report = self
            .inner
            .broker
            .publish(StreamKey::Inbox(account.clone()), encoded)
            .await?;
        Ok(report)
    }

    /// Publishes an event to `campaign`'s connections (and caches it for late joiners if it
    /// is a `progress` or a terminal event). An [`CampaignEvent::Unknown`] is refused, and so
    /// is an event whose `campaignId` is not `campaign`.
    pub async fn publish_campaign(
        &self,
        campaign: &CampaignId,
        event: &CampaignEvent,
    ) -> Result<PublishReport, PublishError> {
        match event {
            CampaignEvent::Unknown(unknown) => {
                return Err(PublishError::UnknownType {
                    kind: unknown.kind.clone(),
                });
            }
            _ => match event.campaign_id() {
                Some(id) if id == campaign => {}
                found => {
                    return Err(PublishError::CampaignMismatch {
                        target: campaign.clone(),
                        found: found.map(CampaignId::to_string).unwrap_or_default(),
                    });
                }
            },
        }
        let encoded = self.encode(|| event.encode());
        let report = self
            .inner
            .broker
            .publish(StreamKey::Campaign(campaign.clone()), encoded)
            .await?;
        Ok(report)
    }

    fn encode(&self, encode: impl FnOnce() -> EncodedEvent) -> EncodedEvent {
        self.inner.encodes.fetch_add(1, Ordering::Relaxed);
        encode()
    }

    /// Registers a connection for `accepted`'s channel; call it before the upgrade, so a
    /// refusal can still be an HTTP answer (429 / 503 with `Retry-After`). The returned
    /// [`Feed`] counts against the limits until it is dropped.
    ///
    /// A campaign with a cached latest event hands it to the new connection first.
    pub fn subscribe(&self, accepted: &Accepted) -> Result<Feed, SubscribeError> {
        let inner = &self.inner;
        let config = &inner.config;
        let account = accepted.account();
        let key = match accepted.channel() {
            Channel::Inbox => StreamKey::Inbox(account.clone()),
            Channel::Campaign(id) => StreamKey::Campaign(id.clone()),
            _ => return Err(SubscribeError::UnsupportedChannel),
        };
        let mut state = lock(&inner.state);
        let refusal = if state.shutting_down {
            Some(SubscribeError::ShuttingDown {
                retry_after: config.retry_after,
            })
        } else if state.accounts.get(account).map_or(0, Vec::len)
            >= config.max_connections_per_account
        {
            Some(SubscribeError::TooManyForAccount {
                limit: config.max_connections_per_account,
            })
        } else if state.total >= config.max_connections {
            Some(SubscribeError::TooManyConnections {
                limit: config.max_connections,
                retry_after: config.retry_after,
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            inner.refused.fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }

        let stream = state.streams.entry(key.clone()).or_default();
        let cached = stream.last.as_ref().map(|(event, _)| event.clone());
        let shared = FeedShared::new(account.clone(), key, cached);
        shared.set_stream_pos(stream.subscribers.len());
        stream.subscribers.push(Arc::clone(&shared));
        if stream.subscribers.len() == 1 {
            inner.broker.stream_opened(&shared.stream);
        }
        let connections = state.accounts.entry(account.clone()).or_default();
        shared.set_account_pos(connections.len());
        connections.push(Arc::clone(&shared));
        state.total = state.total.saturating_add(1);
        drop(state);

        Ok(Feed {
            shared,
            hub: Arc::clone(inner),
        })
    }

    /// Closes every connection of `account` with 4401 (its key was revoked). Queued events
    /// are discarded: nothing more reaches a client that lost its rights.
    ///
    /// This hub only; [`revoke_everywhere`](Self::revoke_everywhere) reaches every node.
    pub fn revoke(&self, account: &AccountId) {
        self.inner.revoke(&Revocation::Account(account.clone()));
    }

    /// Closes every connection to `campaign` with 4403 (its ownership changed).
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
            let mut state = lock(&self.inner.state);
            state.shutting_down = true;
            for connection in state.accounts.values().flatten() {
                connection.command(Control::Shutdown, now);
            }
            state.total
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
            let state = lock(&self.inner.state);
            for connection in state.accounts.values().flatten() {
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
        lock(&self.inner.state).total
    }

    /// Connections `account` holds now.
    pub fn account_connection_count(&self, account: &AccountId) -> usize {
        lock(&self.inner.state)
            .accounts
            .get(account)
            .map_or(0, Vec::len)
    }

    /// The counters.
    pub fn stats(&self) -> HubStats {
        let inner = &self.inner;
        let state = lock(&inner.state);
        HubStats {
            encodes: inner.encodes.load(Ordering::Relaxed),
            delivered: inner.delivered.load(Ordering::Relaxed),
            overflowed: inner.overflowed.load(Ordering::Relaxed),
            refused: inner.refused.load(Ordering::Relaxed),
            connections: state.total,
            streams: state.streams.len(),
            cached_campaigns: state.cache_order.len(),
            gaps: inner.gaps.load(Ordering::Relaxed),
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
    /// Fans an encoded event out to the local subscribers of `stream` (the broker calls this
    /// through [`HubDelivery`]).
    fn deliver(&self, stream: &StreamKey, event: EncodedEvent) -> PublishReport {
        self.deliver_inner(stream, event, false)
    }

    /// [`deliver`](Self::deliver); with `unless_cached`, nothing happens when `event` is
    /// already the campaign's cached latest event (same bytes).
    fn deliver_inner(
        &self,
        stream: &StreamKey,
        event: EncodedEvent,
        unless_cached: bool,
    ) -> PublishReport {
        let now = now();
        let limits = Limits {
            events: self.config.pending_events,
            bytes: self.config.pending_bytes,
        };
        let mut state = lock(&self.state);
        if unless_cached {
            let cached = state.streams.get(stream).and_then(|s| s.last.as_ref());
            if cached.is_some_and(|(last, _)| last.bytes() == event.bytes()) {
                return PublishReport::default();
            }
        }
        if let StreamKey::Campaign(campaign) = stream {
            if matches!(event.class(), EventClass::Progress | EventClass::Terminal) {
                state.remember(campaign, &event, self.config.last_progress_cache);
            }
        }
        let mut report = PublishReport::default();
        for connection in state
            .streams
            .get(stream)
            .into_iter()
            .flat_map(|s| &s.subscribers)
        {
            match connection.deliver(&event, limits, now) {
                Outcome::Queued => report.delivered = report.delivered.saturating_add(1),
                Outcome::Overflowed => report.overflowed = report.overflowed.saturating_add(1),
                Outcome::Refused => {}
            }
        }
        drop(state);
        self.delivered
            .fetch_add(report.delivered as u64, Ordering::Relaxed);
        self.overflowed
            .fetch_add(report.overflowed as u64, Ordering::Relaxed);
        report
    }

    /// Closes the connections a revocation targets (4401 for an account, 4403 for a campaign).
    fn revoke(&self, revocation: &Revocation) {
        let now = now();
        let state = lock(&self.state);
        match revocation {
            Revocation::Account(account) => {
                for connection in state.accounts.get(account).into_iter().flatten() {
                    connection.command(Control::Revoke(CloseCode::Unauthorized), now);
                }
            }
            Revocation::Campaign(campaign) => {
                let key = StreamKey::Campaign(campaign.clone());
                for connection in state
                    .streams
                    .get(&key)
                    .into_iter()
                    .flat_map(|s| &s.subscribers)
                {
                    connection.command(Control::Revoke(CloseCode::Forbidden), now);
                }
            }
        }
    }

    /// Removes a connection (its [`Feed`] is being dropped).
    fn unregister(&self, shared: &Arc<FeedShared>) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        if let Some(stream) = state.streams.get_mut(&shared.stream) {
            let pos = shared.stream_pos.load(Ordering::Relaxed);
            let removed = remove_at(
                &mut stream.subscribers,
                pos,
                shared,
                FeedShared::set_stream_pos,
            );
            if removed && stream.subscribers.is_empty() {
                self.broker.stream_closed(&shared.stream);
            }
            if stream.subscribers.is_empty() && stream.last.is_none() {
                state.streams.remove(&shared.stream);
            }
        }
        let mut removed = false;
        if let Some(connections) = state.accounts.get_mut(&shared.account) {
            let pos = shared.account_pos.load(Ordering::Relaxed);
            removed = remove_at(connections, pos, shared, FeedShared::set_account_pos);
            if connections.is_empty() {
                state.accounts.remove(&shared.account);
            }
        }
        if removed {
            state.total = state.total.saturating_sub(1);
            if state.total == 0 {
                self.idle.notify_waiters();
            }
        }
    }
}

impl HubState {
    /// Caches `event` as `campaign`'s latest, evicting the least recently updated campaign
    /// beyond `capacity`.
    fn remember(&mut self, campaign: &CampaignId, event: &EncodedEvent, capacity: usize) {
        if capacity == 0 {
            return;
        }
        self.tick = self.tick.wrapping_add(1);
        let tick = self.tick;
        let key = StreamKey::Campaign(campaign.clone());
        let stream = self.streams.entry(key).or_default();
        if let Some((_, old_tick)) = stream.last.replace((event.clone(), tick)) {
            self.cache_order.remove(&old_tick);
        }
        self.cache_order.insert(tick, campaign.clone());
        while self.cache_order.len() > capacity {
            let Some((_, evicted)) = self.cache_order.pop_first() else {
                break;
            };
            let key = StreamKey::Campaign(evicted);
            if let Some(stream) = self.streams.get_mut(&key) {
                stream.last = None;
                if stream.subscribers.is_empty() {
                    self.streams.remove(&key);
                }
            }
        }
    }
}

/// Removes `item` from `list`, where it is expected at `pos` (positions are kept current by
/// `set_pos` as elements move). Falls back to a search if the position is stale, so a bug
/// there costs time, not a wrong removal. Returns whether it was found.
fn remove_at(
    list: &mut Vec<Arc<FeedShared>>,
    pos: usize,
    item: &Arc<FeedShared>,
    set_pos: fn(&FeedShared, usize),
) -> bool {
    let pos = match list.get(pos) {
        Some(found) if Arc::ptr_eq(found, item) => pos,
        _ => match list.iter().position(|found| Arc::ptr_eq(found, item)) {
            Some(pos) => pos,
            None => return false,
        },
    };
    list.swap_remove(pos);
    if let Some(moved) = list.get(pos) {
        set_pos(moved, pos);
    }
    true
}
