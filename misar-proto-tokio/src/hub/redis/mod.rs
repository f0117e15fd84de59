//! Multi-node fan-out through Redis pub/sub: a [`Broker`] for deployments of several servers
//! behind a load balancer (cargo feature `redis`).
//!
//! Every node builds its [`Hub`](super::Hub) on a [`RedisBroker`] connected to the same Redis
//! (version 6 or later: the broker speaks RESP3) or the same Redis Cluster (7 or later,
//! [`RedisConfig::cluster`]). An event published on any node reaches the subscribers of every
//! node, and Redis keeps §2.11's offsets, epochs and history, so an opted-in client resumes on
//! any node:
//!
//! ```text
//!  node A: hub.publish_inbox ── encode once ──► batching task: what queued meanwhile, per
//!            stream one EVALSHA of the publish script (atomic, in Redis), 4 in flight:
//!            meta hash: epoch (created if none) + HINCRBY offset by the batch
//!            history:   XADD <offset>-0 per event, one exact XTRIM MAXLEN n, PEXPIRE max_age
//!            campaign:  SET last / done (late joiners, §2.13)
//!            PUBLISH misar:{inbox:alice} "<epoch>:<first offset>\n<json>[\n<json>…]"
//!            (SPUBLISH on a cluster)
//!                                                          │ Redis
//!        ┌─────────────────────────────────────────────────┴──────────────┐
//!        ▼ (node A is subscribed too)                                      ▼
//!  node A: bounded inbound path, parse, check           node B: the same; plain clients get
//!          (one decode per event), deliver_in                  the JSON, opted-in ones
//!          (epoch, offset): same bytes to all                  `,"offset":N`
//!  subscribe on B ─► Broker::ready (Feed::ready) resolves once B's SUBSCRIBE is confirmed;
//!          the adapter answers the upgrade only then
//!  opted-in subscribe on B ─► Broker::resume ─► subscriber task: SUBSCRIBE confirmed, then
//!          EVAL resume read (epoch, latest, oldest held, entries after the position, last)
//!          ─► decide() ─► PendingResume::complete (resume frame, replay, then live)
//! ```
//!
//! - **One channel per stream** (`{prefix}:{inbox:<account>}`, `{prefix}:{campaign:<id>}`:
//!   the braces are Redis Cluster's hash tag, shared by every key of the stream, see
//!   `names.rs`); the message is the position of its first event and the events' JSON, one
//!   per line, `<epoch>:<offset>\n<json>[\n<json>…]` (the JSON is the bytes clients get,
//!   untouched; a message not framed so, or an event of it that is not an event of the
//!   stream, is dropped and counted in [`RedisStats::rejected`]). A node subscribes to a
//!   stream's channel while it has subscribers of it ([`Broker::stream_opened`] /
//!   [`Broker::stream_closed`], batched), so it receives only the events it delivers. 10,000
//!   connected accounts are 10,000 channels on the node's one subscriber connection, which
//!   Redis handles as a hash lookup per publish; `PSUBSCRIBE misar:*` would instead send
//!   every event to every node and cost every publish a pattern match per pattern.
//! - **Lossless at subscribe**: [`Broker::ready`] resolves once the stream's subscription
//!   is confirmed on the node's subscriber connection (at once when it already was), or fails
//!   with [`RedisBrokerError::NotSubscribed`] after [`RedisConfig::subscribe_timeout`]. The
//!   adapters await it ([`Feed::ready`](super::Feed::ready)) before answering the upgrade, so
//!   an event published anywhere after a client's 101 reaches it.
//! - **Batched, pipelined publishing** (`publisher.rs`): publishes that queue while others are
//!   under way go together, one script call per stream, so a busy node pays the script call,
//!   the offset increment, the trim and the `PUBLISH` once per batch; [`PublishReport`] then
//!   says that Redis took the event and how many nodes it went to
//!   ([`PublishReport::receivers`]): the deliveries happen on each node afterwards.
//! - **Bounded inbound path** (`inbound.rs`): at most [`RedisConfig::inbound_max_messages`]
//!   messages and [`RedisConfig::inbound_max_bytes`] wait for the subscriber task; reaching
//!   either drops the subscriber connection (counted in [`RedisStats::overflows`] and as a
//!   gap) and the node resubscribes, instead of growing without bound.
//! - **Redis Cluster** ([`RedisConfig::cluster`]): the `redis` crate's cluster connection
//!   routes each script call by its keys' slot (one stream's keys share one), `SSUBSCRIBE`s
//!   each channel on its slot's master and reconnects to a master that comes back,
//!   resubscribing. A master's lost connection is a gap for this node (counted; opted-in
//!   connections close with 1001), after which every subscription is confirmed again; a
//!   master that is down fails its own streams' publishes and subscriptions only. When a
//!   stream's slot moves (resharding), the old owner sends `sunsubscribe`: a gap, and the
//!   stream is subscribed again, on the new owner.
//! - **Encoded once per node at most**: the publishing node encodes ([`HubStats::encodes`]);
//!   every node, the publisher included, receives the bytes from Redis, checks them with one
//!   decode ([`validate_relayed`]) and hands the same
//!   buffer to all its connections. Publishing goes through Redis even for the local
//!   subscribers, so every node sees a stream's events in the one order Redis gave them.
//! - **Offsets** (§2.11) are per stream: `HINCRBY {prefix}:meta:{stream} o 1` in the publish
//!   script, so they are contiguous and strictly increasing within the stream's epoch, and
//!   assigned in the same atomic step as the history entry and the `PUBLISH`.
//! - **Epochs** are per stream too, in the same hash (`e`): the script creates one (drawn by
//!   the publishing node, [`draw_epoch`](super::draw_epoch)) when the stream has none, and
//!   deletes whatever history is left then, so offsets of two epochs are never compared.
//!   The hash lives [`RedisConfig::history_meta_ttl`] after the stream's last publish (24 h,
//!   never less than the history's age bound or the cache TTL); a flush, an expiry or a Redis
//!   restart without persistence loses it, and with it the epoch. A node notices a new epoch
//!   on the first message (or resume read) that carries it: its hub's stream restarts at the
//!   new epoch's offsets, and the opted-in connections holding a position of the old epoch
//!   close with **1001**; they reconnect, resume with their old position and are told
//!   `recovered: false` with the new epoch. Plain subscribers are not touched.
//! - **History**: `{prefix}:history:{stream}`, a Redis Stream whose entry ids are the
//!   offsets (`<offset>-0`), each with the event's JSON and Redis's time. Trimmed with an
//!   exact `MAXLEN` to [`RedisConfig::history`]'s `max_events` (256) on every publish, not
//!   `MAXLEN ~`: removing one entry per publish costs little at these sizes, and the bound is
//!   then the documented one (`~` keeps up to a macro node more, so "the last 256" would not
//!   be exact); and entries older than `max_age` (10 min) are not replayed (the key also
//!   expires `max_age` after the last publish).
//! - **Resume** ([`Broker::resume`]): an opted-in subscribe queues its connection for the
//!   subscriber task, which reads the history **after** the stream's `SUBSCRIBE` is
//!   confirmed, over the same connection, in one pipelined script call per batch of
//!   connections (one round trip; connections asking for the same stream from the same
//!   position, the crowd a restarted node sends back, share one read, one decision and the
//!   replay's buffers; the read takes only the entries after the position when the history is
//!   within its age bound): an event published before the read is in it, one
//!   published after it arrives live, and the session drops the live copies at or below the
//!   replay's last offset, so there is no gap and no duplicate at the seam. The decision is
//!   the core's [`decide`](misar_proto::resume::decide) (latest: the stream's offset;
//!   lost through: the oldest entry held, minus one, or the latest when none is held). A
//!   campaign's late joiner (`new`, or not recovered) gets its latest `progress` or terminal
//!   event first, from the shared `last` key. A read that fails (Redis unreachable, an
//!   unreadable answer) closes the connection with **1011**, never a silent gap.
//! - **Shared last-progress cache**: publishing a `progress` or terminal event also sets
//!   `{prefix}:last:{id}` (with [`RedisConfig::cache_ttl`]) to the framed message in the same
//!   script. The hub's `subscribe` is synchronous, so a late joiner first gets what its
//!   node's hub caches (the events this node delivered while it had subscribers of the
//!   campaign); when a node gets its first subscriber of a campaign, the broker fetches the
//!   shared key right after subscribing and delivers it if it is newer. The trade-off: that
//!   event arrives a round trip after the upgrade rather than with it, and a client may see a
//!   stale `progress` (its node's) just before the current one; never out of order, and not
//!   twice unless the node's hub evicted the campaign from its cache in between (see
//!   `subscriber.rs`).
//! - **Revocation**: [`Hub::revoke_everywhere`](super::Hub::revoke_everywhere) revokes locally,
//!   then publishes on `{prefix}:revoke`; every node closes the account's connections with
//!   4401 (or a campaign's with 4403).
//! - **Connection loss**: a publish fails with a [`BrokerError`] whose source is a
//!   [`RedisBrokerError`] (nothing is dropped silently); the publishing connection is
//!   re-established on demand, with backoff between attempts. The subscriber task reconnects
//!   with the core's jittered [`Backoff`] and resubscribes every open stream (and fetches the
//!   latest event of every open campaign). Plain WebSocket clients are not touched: events
//!   published while a node was cut off are not replayed to them; each loss counts as a gap
//!   ([`RedisStats::gaps`], [`HubStats::gaps`](super::HubStats::gaps)) with a warning in the
//!   logs. Opted-in clients holding a position are closed with 1001 when the loss is noticed
//!   (the gap would be silent for them): they resume from the Redis history, on this node
//!   once it is back or on another. Resumes waiting when a reconnection attempt fails close
//!   with 1011. A revocation published meanwhile is missed: keep the key check refusing a
//!   revoked key, so the clients of a node that missed it cannot reconnect.
//!
//! # Example
//!
//! ```no_run
//! use misar_proto_tokio::hub::redis::{RedisBroker, RedisConfig};
//! use misar_proto_tokio::hub::{Hub, HubConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = RedisBroker::connect("redis://127.0.0.1:6379", RedisConfig::default()).await?;
//! let hub = Hub::with_broker(HubConfig::default(), broker.clone());
//! // Use `hub` exactly as with the in-process broker; `broker.stats()` for the Redis side.
//! # let _ = hub;
//! # Ok(())
//! # }
//! ```
//!
//! Give deployments that share a Redis distinct [`RedisConfig::prefix`]es (without `{` or
//! `}`). Connection limits ([`HubConfig::max_connections_per_account`](super::HubConfig::max_connections_per_account))
//! are per node.
//!
//! [`HubStats::encodes`]: super::HubStats::encodes
//! [`validate_relayed`]: misar_proto::streams::validate_relayed

mod connection;
mod inbound;
mod names;
mod publisher;
mod subscriber;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ::redis::RedisError;
use misar_proto::backoff::{Backoff, BackoffConfig};
use misar_proto::event::{EncodedEvent, EventClass};
use misar_proto::resume::ResumeRequest;
use misar_proto::streams::{HistoryConfig, PublishRules};
use tokio::sync::{Notify, watch};

use super::{
    Broker, BrokerError, BrokerFuture, HubDelivery, PendingResume, PublishReport, ReadyFuture,
    Revocation, RevokeFuture, StreamKey, lock,
};
use connection::Upstream;
use names::Names;
use publisher::{Op, Publisher};
use subscriber::{Interest, Progress, Resume};

/// Settings of a [`RedisBroker`]. `Default` gives sensible values; every node of a deployment
/// must use the same `prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// The first part of every channel and key name (`"misar"`): `{prefix}:inbox:{account}`,
    /// `{prefix}:campaign:{id}`, `{prefix}:last:{id}`, `{prefix}:done:{id}`,
    /// `{prefix}:meta:{inbox|campaign}:{…}`, `{prefix}:history:{inbox|campaign}:{…}`,
    /// `{prefix}:revoke`.
    pub prefix: String,
    /// How long a campaign's latest `progress` or terminal event stays in Redis after it was
    /// published (1 hour): a client joining later gets nothing from the shared cache.
    pub cache_ttl: Duration,
    /// The longest a connection attempt may take (2 s).
    pub connect_timeout: Duration,
    /// The longest Redis may take to answer a command (2 s): a publish that waits longer fails
    /// with [`RedisBrokerError::Timeout`].
    pub command_timeout: Duration,
    /// How often the subscriber connection is checked with a `PING` when nothing else happens
    /// (10 s), so a Redis that vanished without closing the TCP connection is noticed.
    pub health_check_interval: Duration,
    /// The reconnect backoff (full jitter; 100 ms base, 5 s cap): between subscriber
    /// reconnection attempts, and between connection attempts of the publishing side.
    pub backoff: BackoffConfig,
    /// The largest event accepted from Redis (64 KiB, as [`HubConfig::max_event_bytes`](super::HubConfig::max_event_bytes)
    /// (super::HubConfig::max_event_bytes)); a larger one is dropped and counted as rejected.
    pub max_event_bytes: usize,
    /// The history kept in Redis for resuming clients (§2.11), per stream: the last
    /// `max_events` events (256; exact trim) no older than `max_age` (10 minutes). This
    /// broker keeps the history, so [`HubConfig::history`](super::HubConfig::history) is
    /// ignored; `max_bytes` and `remembered_streams` do not apply (Redis's memory is bounded
    /// by the count and the age, per stream).
    pub history: HistoryConfig,
    /// How long a stream's epoch and latest offset stay in Redis after its last publish
    /// (24 hours; never less than `history.max_age` or `cache_ttl`). A client that comes
    /// back later finds a new epoch and is told `recovered: false`.
    pub history_meta_ttl: Duration,
    /// Messages from Redis waiting for this node's subscriber task at most (8,192); with
    /// `inbound_max_bytes` (16 MiB), the bound on what a node that cannot keep up holds.
    /// Reaching either drops the subscriber connection: a gap, counted in
    /// [`RedisStats::gaps`] and [`RedisStats::overflows`], then resubscription (opted-in
    /// clients resume from the history).
    pub inbound_max_messages: usize,
    /// Bytes of messages from Redis waiting for the subscriber task at most (16 MiB).
    pub inbound_max_bytes: usize,
    /// How long a new connection may wait for its stream's subscription to be confirmed
    /// ([`Feed::ready`](super::Feed::ready), before the upgrade is answered; 2 s): past
    /// it the connection is refused with 503 and `Retry-After`, since an event published
    /// after its 101 could not be promised to it.
    pub subscribe_timeout: Duration,
    /// Redis Cluster (false): the URL given to [`RedisBroker::connect`] is then a
    /// comma-separated list of seed nodes, pub/sub is sharded (`SSUBSCRIBE` / `SPUBLISH`,
    /// Redis 7 or later), and every key of a stream shares its channel's hash tag, so one
    /// stream lives on one master.
    pub cluster: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            prefix: "misar".to_owned(),
            cache_ttl: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            health_check_interval: Duration::from_secs(10),
            backoff: BackoffConfig {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(5),
            },
            max_event_bytes: misar_proto::streams::DEFAULT_MAX_EVENT_BYTES,
            history: HistoryConfig::default(),
            history_meta_ttl: Duration::from_secs(24 * 3600),
            inbound_max_messages: 8192,
            inbound_max_bytes: 16 << 20,
            subscribe_timeout: Duration::from_secs(2),
            cluster: false,
        }
    }
}

/// What went wrong talking to Redis. Reaches a publisher as the
/// [`source`](std::error::Error::source) of the [`BrokerError`] in
/// [`PublishError::Broker`](super::PublishError::Broker); downcast to inspect it.
///
/// Texts never include the Redis URL (it may hold a password).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisBrokerError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL")]
    InvalidUrl(#[source] RedisError),
    /// Connecting failed (refused, unreachable, authentication, ...).
    #[error("could not connect to Redis")]
    Connect(#[source] RedisError),
    /// The last connection attempt failed and the backoff does not allow a new one yet.
    #[error("not connected to Redis (next attempt in {retry_in:?})")]
    Disconnected {
        /// When the next attempt may be made.
        retry_in: Duration,
    },
    /// The connection broke while a command was under way.
    #[error("the connection to Redis was lost")]
    ConnectionLost,
    /// Redis did not answer (or accept a connection) within the configured timeout.
    #[error("Redis did not answer in time")]
    Timeout,
    /// Redis refused or failed a command.
    #[error("a Redis command failed")]
    Command(#[source] RedisError),
    /// The configuration cannot work (a prefix with `{` or `}`: they would break the hash
    /// tags that keep a stream's keys together).
    #[error("invalid broker configuration: {0}")]
    InvalidConfig(&'static str),
    /// The stream's subscription was not confirmed within
    /// [`RedisConfig::subscribe_timeout`] (Redis, or the stream's master, is unreachable).
    #[error("the subscription to the stream is not confirmed")]
    NotSubscribed,
}

impl RedisConfig {
    /// How long a stream's epoch and offset live: never shorter than what they vouch for.
    fn meta_ttl(&self) -> Duration {
        self.history_meta_ttl
            .max(self.history.max_age)
            .max(self.cache_ttl)
    }
}

impl RedisBrokerError {
    fn from_command(error: RedisError) -> Self {
        if error.is_timeout() {
            RedisBrokerError::Timeout
        } else if error.is_connection_dropped() || error.is_unrecoverable_error() {
            RedisBrokerError::ConnectionLost
        } else {
            RedisBrokerError::Command(error)
        }
    }
}

impl From<RedisBrokerError> for BrokerError {
    fn from(error: RedisBrokerError) -> Self {
        BrokerError::with_source(format!("redis: {error}"), error)
    }
}

/// The broker's counters. A [`RedisStats::gaps`] that grows means events were missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Events (and revocations) this node sent to Redis.
    pub published: u64,
    /// Publishes (and revocations) that failed and were reported to their caller.
    pub publish_errors: u64,
    /// Events received from Redis and delivered to the attached hubs.
    pub received: u64,
    /// Campaign events fetched from the shared cache and delivered (late joiners, catch-up
    /// after a reconnection).
    pub fetched: u64,
    /// Revocations received from Redis and applied.
    pub revocations: u64,
    /// Messages received that were not valid (not an event of the stream, unknown type,
    /// foreign channel): dropped with a warning.
    pub rejected: u64,
    /// Subscriber connections lost after being established: each is a window in which
    /// events were not delivered on this node.
    pub gaps: u64,
    /// Subscriber connections re-established after a loss.
    pub reconnects: u64,
    /// Opted-in connections whose start was decided from the Redis history (§2.11).
    pub resumes: u64,
    /// Resumes that failed (Redis unreachable or answering something unreadable): those
    /// connections closed with 1011.
    pub resume_errors: u64,
    /// Times a stream's epoch changed under this node (its Redis history was gone).
    pub epoch_changes: u64,
    /// Subscriber connection attempts that failed.
    pub connect_failures: u64,
    /// Times the messages waiting for the subscriber task reached
    /// [`RedisConfig::inbound_max_messages`] or [`RedisConfig::inbound_max_bytes`] and the
    /// connection was dropped (each also counts as a gap).
    pub overflows: u64,
    /// The most bytes of messages that ever waited for the subscriber task at once (never
    /// more than [`RedisConfig::inbound_max_bytes`] plus one message).
    pub inbound_peak_bytes: usize,
    /// Streams subscribed upstream now.
    pub subscribed_streams: usize,
    /// Whether the subscriber connection is up with its subscriptions in place.
    pub connected: bool,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    received: AtomicU64,
    fetched: AtomicU64,
    revocations: AtomicU64,
    rejected: AtomicU64,
    gaps: AtomicU64,
    reconnects: AtomicU64,
    resumes: AtomicU64,
    resume_errors: AtomicU64,
    epoch_changes: AtomicU64,
    connect_failures: AtomicU64,
    overflows: AtomicU64,
    inbound_peak_bytes: Arc<AtomicUsize>,
    subscribed: AtomicUsize,
}

/// What the broker handle, its hooks and its subscriber task share.
struct Shared {
    config: RedisConfig,
    upstream: Arc<Upstream>,
    names: Arc<Names>,
    hubs: RwLock<Vec<HubDelivery>>,
    interest: Mutex<Interest>,
    /// Wakes the subscriber task when the interest changed.
    wake: Notify,
    progress: watch::Sender<Progress>,
    stats: Counters,
    publisher: Publisher,
    /// What relayed bytes must satisfy.
    rules: PublishRules,
    /// Opted-in connections waiting for their recovery decision ([`Broker::resume`]); the
    /// subscriber task reads their history once their stream's subscription is in place.
    resumes: Mutex<Vec<Resume>>,
}

/// A [`Broker`] over Redis pub/sub. See the [module docs](self).
///
/// Build it with [`connect`](Self::connect) and hand it to
/// [`Hub::with_broker`](super::Hub::with_broker) (an `Arc<RedisBroker>` is an
/// `Arc<dyn Broker>`). It owns a background task (the subscriber), which stops when the last
/// `Arc` is dropped.
pub struct RedisBroker {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl RedisBroker {
    /// Connects to Redis at `url` (`redis://[user:password@]host:port[/db]`; RESP3 is
    /// requested whatever the URL says) and starts the subscriber task.
    ///
    /// Fails if Redis cannot be reached within [`RedisConfig::connect_timeout`]; once
    /// connected, losses are survived (see the module docs).
    pub async fn connect(
        url: &str,
        config: RedisConfig,
    ) -> Result<Arc<RedisBroker>, RedisBrokerError> {
        if config.prefix.contains(['{', '}']) {
            return Err(RedisBrokerError::InvalidConfig(
                "the prefix must not contain `{` or `}`",
            ));
        }
        let upstream = Arc::new(Upstream::new(url, config.cluster)?);
        let names = Arc::new(Names::new(&config.prefix));
        let (progress, _) = watch::channel(Progress::default());
        let publisher = Publisher::new(
            Arc::clone(&upstream),
            Arc::clone(&names),
            config.clone(),
            Backoff::new(config.backoff, seed()),
        );
        // The publishing side first: its error says why Redis cannot be reached.
        publisher.check().await?;
        let shared = Arc::new(Shared {
            names,
            upstream,
            hubs: RwLock::new(Vec::new()),
            interest: Mutex::new(Interest::default()),
            wake: Notify::new(),
            progress,
            stats: Counters::default(),
            publisher,
            rules: PublishRules {
                max_event_bytes: config.max_event_bytes,
            },
            resumes: Mutex::new(Vec::new()),
            config,
        });
        let backoff = Backoff::new(shared.config.backoff, seed());
        let task = tokio::spawn(subscriber::run(Arc::clone(&shared), backoff)).abort_handle();
        let broker = Arc::new(RedisBroker { shared, task });
        let connect_timeout = broker.shared.config.connect_timeout.saturating_mul(2);
        match tokio::time::timeout(connect_timeout, broker.connected()).await {
            Ok(()) => Ok(broker),
            Err(_) => Err(RedisBrokerError::Timeout),
        }
    }

    /// Resolves once the upstream subscriptions reflect every stream opened or closed on the
    /// attached hubs before the call (and the shared latest event of newly opened campaigns
    /// was fetched and delivered). Waits through reconnections: bound it with a timeout.
    ///
    /// An event published on another node after `sync` returned reaches this node's
    /// subscribers of those streams; one published between a subscribe and the upstream
    /// subscription may not (pub/sub has no history).
    pub async fn sync(&self) {
        let target = lock(&self.shared.interest).generation;
        let mut progress = self.shared.progress.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = progress
            .wait_for(|p| p.connected && generation_reached(p.applied, target))
            .await;
    }

    /// Resolves when the subscriber connection is up with its subscriptions in place (at
    /// once if it is). For readiness checks, and to wait for the recovery after an outage.
    pub async fn connected(&self) {
        self.wait_connected(true).await;
    }

    /// Resolves when the subscriber connection is down (at once if it is): the gap has been
    /// counted by then.
    pub async fn disconnected(&self) {
        self.wait_connected(false).await;
    }

    async fn wait_connected(&self, up: bool) {
        let mut progress = self.shared.progress.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = progress.wait_for(|p| p.connected == up).await;
    }

    /// Whether the subscriber connection is up with its subscriptions in place.
    pub fn is_connected(&self) -> bool {
        self.shared.progress.borrow().connected
    }

    /// The counters.
    pub fn stats(&self) -> RedisStats {
        let s = &self.shared.stats;
        RedisStats {
            published: s.published.load(Ordering::Relaxed),
            publish_errors: s.publish_errors.load(Ordering::Relaxed),
            received: s.received.load(Ordering::Relaxed),
            fetched: s.fetched.load(Ordering::Relaxed),
            revocations: s.revocations.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            gaps: s.gaps.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            resumes: s.resumes.load(Ordering::Relaxed),
            resume_errors: s.resume_errors.load(Ordering::Relaxed),
            epoch_changes: s.epoch_changes.load(Ordering::Relaxed),
            connect_failures: s.connect_failures.load(Ordering::Relaxed),
            overflows: s.overflows.load(Ordering::Relaxed),
            inbound_peak_bytes: s.inbound_peak_bytes.load(Ordering::Relaxed),
            subscribed_streams: s.subscribed.load(Ordering::Relaxed),
            connected: self.is_connected(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.shared.config
    }

    /// Counts a publish's (or revocation's) outcome.
    fn count<T>(&self, result: Result<T, RedisBrokerError>) -> Result<T, BrokerError> {
        let counters = &self.shared.stats;
        match result {
            Ok(value) => {
                counters.published.fetch_add(1, Ordering::Relaxed);
                Ok(value)
            }
            Err(error) => {
                counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                Err(error.into())
            }
        }
    }
}

/// An error and its causes, `: `-separated, for a log line ("could not connect to Redis:
/// Connection refused (os error 111)").
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// `items` in groups of equal `key`, the groups in order of their first item, each group in
/// arrival order (a publish batch by stream, resumes by stream and position).
fn group_in_order<T, K: std::hash::Hash + Eq>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut index: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    for item in items {
        match index.entry(key(&item)) {
            std::collections::hash_map::Entry::Occupied(at) => groups[*at.get()].push(item),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(groups.len());
                groups.push(vec![item]);
            }
        }
    }
    groups
}

/// Whether generation `applied` is at or past `target` (generations wrap; they never get
/// 2⁶³ apart).
fn generation_reached(applied: u64, target: u64) -> bool {
    applied.wrapping_sub(target) < (1 << 63)
}

/// A per-broker seed for the backoff's jitter, so the nodes of a deployment that lost the
/// same Redis do not come back in step. `RandomState` is seeded by the OS per process and
/// varied per instance.
fn seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

impl Broker for RedisBroker {
    fn attach(&self, delivery: HubDelivery) {
        let mut hubs = self
            .shared
            .hubs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hubs.retain(HubDelivery::is_alive);
        hubs.push(delivery);
    }

    fn publish(&self, stream: StreamKey, event: EncodedEvent) -> BrokerFuture<'_> {
        Box::pin(async move {
            // Campaign events are refused once the campaign finished; `progress` and terminal
            // events also become its shared latest event.
            let mode = match event.class() {
                EventClass::Progress => 1,
                EventClass::Terminal => 2,
                _ => 0,
            };
            // A batch's events travel newline-separated in one message: the core's encoding
            // is compact, never a raw newline (misar-proto's `event_props` checks it).
            let json = event.bytes().clone();
            debug_assert!(
                !json.contains(&b'\n'),
                "an encoded event holds a raw newline"
            );
            let campaign = match &stream {
                StreamKey::Campaign(campaign) => Some(campaign.clone()),
                StreamKey::Inbox(_) => None,
            };
            let receivers = self.count(self.shared.publisher.publish(stream, json, mode).await)?;
            match (receivers, campaign) {
                (publisher::FINISHED, Some(campaign)) => Err(BrokerError::refused(
                    misar_proto::streams::PublishError::Finished { campaign },
                )),
                // Deliveries happen on each node (this one included) when Redis hands the
                // event back, after this call: the node knows that Redis took it, and how
                // many nodes were subscribed.
                (receivers, _) => Ok(PublishReport::accepted_by(
                    usize::try_from(receivers).unwrap_or(0),
                )),
            }
        })
    }

    fn keeps_history(&self) -> bool {
        true
    }

    fn resume(&self, stream: StreamKey, request: ResumeRequest, start: PendingResume) {
        // Under the hub's locks: queue it for the subscriber task, which reads the history
        // once the stream's subscription is confirmed (see `subscriber.rs`).
        lock(&self.shared.resumes).push(Resume {
            stream,
            request,
            start,
        });
        self.shared.wake.notify_one();
    }

    fn ready<'a>(&'a self, stream: &'a StreamKey) -> ReadyFuture<'a> {
        Box::pin(async move {
            let live = || lock(&self.shared.interest).live.contains(stream);
            if live() {
                return Ok(());
            }
            let mut progress = self.shared.progress.subscribe();
            // Re-checked on every change of the confirmed set (and at once).
            let confirmed = progress.wait_for(|_| live());
            match tokio::time::timeout(self.shared.config.subscribe_timeout, confirmed).await {
                Ok(_) => Ok(()),
                Err(_) => Err(RedisBrokerError::NotSubscribed.into()),
            }
        })
    }

    fn stream_opened(&self, stream: &StreamKey) {
        lock(&self.shared.interest).opened(stream);
        self.shared.wake.notify_one();
    }

    fn stream_closed(&self, stream: &StreamKey) {
        lock(&self.shared.interest).closed(stream);
        self.shared.wake.notify_one();
    }

    fn revoke(&self, revocation: Revocation) -> RevokeFuture<'_> {
        Box::pin(async move {
            let message = names::encode_revocation(&revocation);
            let sent = self
                .shared
                .publisher
                .send(Op {
                    channel: self.shared.names.revoke(),
                    message: &message,
                })
                .await;
            self.count(sent).map(|_| ())
        })
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisBroker")
            .field("prefix", &self.shared.config.prefix)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
