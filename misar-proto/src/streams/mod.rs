//! The fan-out table (§2.7–§2.9, §2.13): who subscribes to which stream, the limits, the
//! late-joiner cache, finished campaigns, revocation, publish validation.
//!
//! Like the sessions, the table does no I/O, holds no lock and reads no clock: it answers
//! with values ("deliver these bytes to these connections", "refuse: finished", "close this
//! one with 4401") and the caller does the delivering. Its pieces can be used whole or
//! apart:
//!
//! | piece | decides |
//! |---|---|
//! | [`validate_inbox`], [`validate_campaign`], [`validate_relayed`] | whether an event may be published (type, `campaignId`, size) and its one encoding |
//! | [`Stream`] | one stream's subscribers, the late joiner's first event, finished campaigns, the recipients of a publish |
//! | [`Registry`] | admission (per-account and total limits, shutdown), revocation marks, who to close on a revocation or shutdown |
//! | [`CacheOrder`] | which campaigns keep a late-joiner event (least recently updated forgotten first) |
//! | [`Streams`] | all of the above in one single-threaded table |
//!
//! A multi-threaded server (the async adapter's `Hub`) keeps one lock per [`Stream`] and one
//! for the [`Registry`], so a fan-out to a large stream holds only that stream's lock; a
//! single-threaded driver, a test harness or a fuzzer uses [`Streams`].
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//!
//! use misar_proto::auth::AccountId;
//! use misar_proto::event::{CampaignEvent, Completed, Progress};
//! use misar_proto::route::CampaignId;
//! use misar_proto::streams::{PublishError, StreamKey, Streams, StreamsConfig};
//!
//! let now = misar_proto::testing::virtual_epoch(); // the table never reads a clock
//! let epoch = misar_proto::resume::Epoch::new("e1")?; // draw one at process start
//! let mut table: Streams<&str> = Streams::new(StreamsConfig::default(), epoch)?;
//! let campaign = CampaignId::new("c-42")?;
//! let stream = StreamKey::Campaign(campaign.clone());
//! let account = AccountId::from("acct-1");
//!
//! let mark = table.mark(); // before the handshake's hooks run
//! let early = table.subscribe(&account, &stream, mark, "early", now)?;
//! assert_eq!(early.first, None);
//!
//! let done = CampaignEvent::Completed(Completed::new(campaign.clone(), 3, 3, 0, 1));
//! let delivery = table.publish_campaign(&campaign, &done, now)?;
//! assert_eq!(delivery.recipients, vec!["early"]);
//!
//! // Finished: the terminal event sticks, a stray progress is refused...
//! let stray = CampaignEvent::Progress(Progress::new(campaign.clone(), 2, 3, 2, 0, 0));
//! assert!(matches!(
//!     table.publish_campaign(&campaign, &stray, now),
//!     Err(PublishError::Finished { .. })
//! ));
//! // ... and a late joiner gets the terminal event first (its session then closes with 1000).
//! let late = table.subscribe(&account, &stream, table.mark(), "late", now)?;
//! assert_eq!(late.first.as_ref(), Some(&delivery.event));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod history;
mod publish;
mod registry;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::auth::AccountId;
use crate::close::{ChannelKind, CloseCode};
use crate::event::{CampaignEvent, EncodedEvent, EventClass, InboxEvent};
use crate::resume::{Epoch, ResumeRequest};
use crate::route::{CampaignId, Channel};

pub use cache::CacheOrder;
pub use history::{HistoryChange, HistoryConfig, HistoryIndex};
pub use publish::{
    DEFAULT_MAX_EVENT_BYTES, PublishError, PublishRules, validate_campaign, validate_inbox,
    validate_relayed,
};
pub use registry::{Admission, Registry, RevocationMark, SubscribeError};
pub use stream::{Fanout, Joined, Left, Recovered, Stream};

/// One stream of events: an account's inbox or one campaign.
///
/// Exhaustive on purpose: the protocol has exactly these two channels, and brokers name their
/// channels and keys after them (a new kind of stream is a new protocol version).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKey {
    /// The inbox of an account.
    Inbox(AccountId),
    /// One campaign's progress.
    Campaign(CampaignId),
}

impl StreamKey {
    /// The stream a connection of `account` to `channel` receives (`None` for a channel this
    /// version does not know).
    pub fn for_channel(account: &AccountId, channel: &Channel) -> Option<StreamKey> {
        match channel {
            Channel::Inbox => Some(StreamKey::Inbox(account.clone())),
            Channel::Campaign(id) => Some(StreamKey::Campaign(id.clone())),
            #[allow(unreachable_patterns)] // `Channel` is non-exhaustive
            _ => None,
        }
    }

    /// Inbox or campaign.
    pub fn kind(&self) -> ChannelKind {
        match self {
            StreamKey::Inbox(_) => ChannelKind::Inbox,
            StreamKey::Campaign(_) => ChannelKind::Campaign,
        }
    }

    /// Whether this stream keeps an event of `class` for late joiners (§2.7): a campaign's
    /// `progress` and terminal events; nothing of an inbox.
    pub fn keeps(&self, class: EventClass) -> bool {
        matches!(self, StreamKey::Campaign(_))
            && matches!(class, EventClass::Progress | EventClass::Terminal)
    }

    /// The campaign, for a campaign stream.
    pub fn campaign(&self) -> Option<&CampaignId> {
        match self {
            StreamKey::Campaign(id) => Some(id),
            StreamKey::Inbox(_) => None,
        }
    }
}

/// One connection, unique within the [`Registry`] that admitted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The number behind the id.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Settings of the table. `Default` gives the values below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamsConfig {
    /// Connections one account may hold at once (100); more →
    /// [`SubscribeError::TooManyForAccount`] (HTTP 429).
    pub max_connections_per_account: usize,
    /// Connections served at once (10,000); more → [`SubscribeError::TooManyConnections`]
    /// (HTTP 503 with `Retry-After`).
    pub max_connections: usize,
    /// The `Retry-After` suggested with a 503 (5 s).
    pub retry_after: Duration,
    /// How many campaigns keep their latest `progress` or terminal event for late joiners
    /// (1024); see [`CacheOrder`]. 0 turns the cache off.
    pub last_event_cache: usize,
    /// The publish rules (largest event: 64 KiB).
    pub publish: PublishRules,
    /// How long a revocation is remembered for handshakes in flight (5 min, far above any
    /// sane hook timeout). A handshake whose hooks ran longer ago than that is refused as
    /// [`SubscribeError::StaleHandshake`] rather than risk serving a revoked key.
    pub revocation_memory: Duration,
    /// At most this many revocations are remembered (65,536); beyond it the oldest are
    /// forgotten early (with the same effect on old handshakes).
    pub max_remembered_revocations: usize,
    /// The history kept for resuming clients (§2.11: 256 events and 10 minutes per stream,
    /// 64 MiB in total).
    pub history: HistoryConfig,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            max_connections_per_account: 100,
            max_connections: 10_000,
            retry_after: Duration::from_secs(5),
            last_event_cache: 1024,
            publish: PublishRules::default(),
            revocation_memory: Duration::from_secs(300),
            max_remembered_revocations: 65_536,
            history: HistoryConfig::default(),
        }
    }
}

/// A setting of [`StreamsConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamsConfigError {
    /// A limit of 0 would refuse every connection.
    #[error("{field} is 0: every connection would be refused")]
    NoConnections {
        /// The field.
        field: &'static str,
    },
    /// `max_event_bytes` of 0 would refuse every event.
    #[error("publish.max_event_bytes is 0: every event would be refused")]
    NoEvents,
    /// `revocation_memory` of 0 (or `max_remembered_revocations` of 0) would refuse every
    /// handshake that a revocation overtook... or forget at once.
    #[error("{field} is 0: revocations racing a handshake could not be judged")]
    NoRevocationMemory {
        /// The field.
        field: &'static str,
    },
}

impl StreamsConfig {
    /// Checks that every setting can work.
    pub fn validate(&self) -> Result<(), StreamsConfigError> {
        if self.max_connections_per_account == 0 {
            return Err(StreamsConfigError::NoConnections {
                field: "max_connections_per_account",
            });
        }
        if self.max_connections == 0 {
            return Err(StreamsConfigError::NoConnections {
                field: "max_connections",
            });
        }
        if self.publish.max_event_bytes == 0 {
            return Err(StreamsConfigError::NoEvents);
        }
        if self.revocation_memory.is_zero() {
            return Err(StreamsConfigError::NoRevocationMemory {
                field: "revocation_memory",
            });
        }
        if self.max_remembered_revocations == 0 {
            return Err(StreamsConfigError::NoRevocationMemory {
                field: "max_remembered_revocations",
            });
        }
        Ok(())
    }
}

/// What [`Streams::subscribe`] decided for an admitted connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Subscribed {
    /// The connection's id (for [`Streams::unsubscribe`]).
    pub id: ConnectionId,
    /// Queue this first (a campaign's latest `progress`, or its terminal event).
    pub first: Option<EncodedEvent>,
    /// Close at once with this code instead of serving: the account (4401) or the campaign
    /// (4403) was revoked after the handshake's mark.
    pub revoked: Option<CloseCode>,
    /// The stream's first subscriber (a multi-node broker subscribes upstream).
    pub opened: bool,
    /// For an opted-in connection (§2.11): its start, for
    /// [`ServerSession::start_resume`](crate::server::ServerSession::start_resume) (`first`
    /// above is then `None`: the late-joiner event is part of this).
    pub resume: Option<Recovered>,
}

/// What a publish decided: queue `event` for each of `recipients`, and `resumable` for each
/// of `resuming`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Delivery<C> {
    /// The event, encoded once (plain §2.4 bytes).
    pub event: EncodedEvent,
    /// The connections to queue it for.
    pub recipients: Vec<C>,
    /// The opted-in encoding (`,"offset":N`), encoded once.
    pub resumable: EncodedEvent,
    /// The opted-in connections to queue it for.
    pub resuming: Vec<C>,
}

/// The whole table for one thread: a [`Registry`], the [`Stream`]s, the [`CacheOrder`].
///
/// See the [module docs](self) for an example.
#[derive(Debug)]
pub struct Streams<C> {
    config: StreamsConfig,
    epoch: Epoch,
    index: HistoryIndex,
    registry: Registry<C>,
    streams: HashMap<StreamKey, Stream<C>>,
    cache: CacheOrder,
    /// Each connection's account and stream (for unsubscribe by id).
    members: HashMap<ConnectionId, (AccountId, StreamKey)>,
}

impl<C: Clone> Streams<C> {
    /// An empty table, if `config` can work, whose offsets are of `epoch` (§2.11).
    ///
    /// Draw the epoch afresh whenever the table's memory is new (at process start): offsets
    /// restart, and a client's position from an earlier table must not be mistaken for one
    /// of this table.
    pub fn new(config: StreamsConfig, epoch: Epoch) -> Result<Self, StreamsConfigError> {
        config.validate()?;
        Ok(Self {
            epoch,
            index: HistoryIndex::new(config.history.clone()),
            registry: Registry::new(&config),
            cache: CacheOrder::new(config.last_event_cache),
            config,
            streams: HashMap::new(),
            members: HashMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StreamsConfig {
        &self.config
    }

    /// The epoch of every offset of this table.
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// The history's table-wide bookkeeping (bytes held, streams remembered).
    pub fn history(&self) -> &HistoryIndex {
        &self.index
    }

    /// The registry (counts, connections).
    pub fn registry(&self) -> &Registry<C> {
        &self.registry
    }

    /// A stream, if the table holds it (it has subscribers or a cached event).
    pub fn stream(&self, key: &StreamKey) -> Option<&Stream<C>> {
        self.streams.get(key)
    }

    /// Streams held now.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Campaigns keeping a late-joiner event now.
    pub fn cached_campaigns(&self) -> usize {
        self.cache.len()
    }

    /// A mark to take before a handshake's hooks run (see [`RevocationMark`]).
    pub fn mark(&self) -> RevocationMark {
        self.registry.mark()
    }

    /// Admits `connection` of `account` to `stream` (see [`Registry::admit`]) and joins it to
    /// the stream (see [`Stream::join`]).
    pub fn subscribe(
        &mut self,
        account: &AccountId,
        stream: &StreamKey,
        mark: RevocationMark,
        connection: C,
        now: Instant,
    ) -> Result<Subscribed, SubscribeError> {
        self.subscribe_with(account, stream, mark, connection, None, now)
    }

    /// [`subscribe`](Self::subscribe) for a connection that may have opted in to resume
    /// (§2.11): with `resume` set, the answer's `resume` holds its start (the `resume` frame,
    /// the missed events, the late-joiner event), decided from the stream's history.
    pub fn subscribe_with(
        &mut self,
        account: &AccountId,
        stream: &StreamKey,
        mark: RevocationMark,
        connection: C,
        resume: Option<&ResumeRequest>,
        now: Instant,
    ) -> Result<Subscribed, SubscribeError> {
        let admission = self
            .registry
            .admit(account, stream, mark, connection.clone(), now)?;
        let index = &mut self.index;
        let table_stream = self
            .streams
            .entry(stream.clone())
            .or_insert_with(|| Stream::new(stream.clone(), index.origin(stream)));
        let joined = table_stream.join_as(admission.id, connection, resume.is_some());
        let recovered = resume
            .map(|request| table_stream.recover(request, &self.epoch, now, &self.config.history));
        if let Some(recovered) = &recovered {
            self.index.apply(stream, recovered.history);
        }
        self.members
            .insert(admission.id, (account.clone(), stream.clone()));
        Ok(Subscribed {
            id: admission.id,
            first: if recovered.is_some() {
                None
            } else {
                joined.first
            },
            revoked: admission.revoked,
            opened: joined.opened,
            resume: recovered,
        })
    }

    /// Removes a connection. Returns what its stream decided (`closed`: it was the last
    /// subscriber).
    pub fn unsubscribe(&mut self, id: ConnectionId) -> Left {
        let Some((account, key)) = self.members.remove(&id) else {
            return Left {
                removed: false,
                closed: false,
            };
        };
        let _ = self.registry.remove(&account, id);
        let Some(stream) = self.streams.get_mut(&key) else {
            return Left {
                removed: false,
                closed: false,
            };
        };
        let (_, left) = stream.leave(id);
        self.drop_if_idle(&key);
        left
    }

    /// Drops `key`'s stream if nothing in it is worth keeping, remembering its latest offset.
    fn drop_if_idle(&mut self, key: &StreamKey) {
        if let Some(stream) = self.streams.get(key) {
            if stream.is_idle() {
                let latest = stream.latest();
                self.streams.remove(key);
                self.index.dropped(key, latest);
            }
        }
    }

    /// Drops history that is due: events older than the history's `max_age`, and the
    /// table's oldest while over its byte budget. Publishes do this too; call it now and then
    /// (e.g. once a second) to give memory back when nothing is published.
    pub fn expire(&mut self, now: Instant) {
        while let Some((offset, key)) = self.index.due(now) {
            let Some(stream) = self.streams.get_mut(&key) else {
                // Cannot happen (a stream's entry goes with it); never loop on it.
                self.index.apply(
                    &key,
                    HistoryChange {
                        oldest_before: Some((offset, now)),
                        ..HistoryChange::default()
                    },
                );
                continue;
            };
            let change = stream.drop_oldest(offset);
            if change.is_empty() {
                break;
            }
            self.index.apply(&key, change);
            self.drop_if_idle(&key);
        }
    }

    /// Validates and encodes an inbox event (see [`validate_inbox`]) and publishes it.
    pub fn publish_inbox(
        &mut self,
        account: &AccountId,
        event: &InboxEvent,
        now: Instant,
    ) -> Result<Delivery<C>, PublishError> {
        let encoded = validate_inbox(event, &self.config.publish)?;
        self.deliver(&StreamKey::Inbox(account.clone()), encoded, now)
    }

    /// Validates and encodes a campaign event (see [`validate_campaign`]) and publishes it.
    pub fn publish_campaign(
        &mut self,
        campaign: &CampaignId,
        event: &CampaignEvent,
        now: Instant,
    ) -> Result<Delivery<C>, PublishError> {
        let encoded = validate_campaign(campaign, event, &self.config.publish)?;
        self.deliver(&StreamKey::Campaign(campaign.clone()), encoded, now)
    }

    /// Publishes an event already validated for `key` (by one of the `validate_*` functions,
    /// on this node or another) at the table's next offset.
    pub fn deliver(
        &mut self,
        key: &StreamKey,
        event: EncodedEvent,
        now: Instant,
    ) -> Result<Delivery<C>, PublishError> {
        let caches = key.keeps(event.class());
        let keeps_history = self.config.history.max_events > 0;
        if !caches && !keeps_history && !self.streams.contains_key(key) {
            // Nobody listens and nothing is to be kept but the offset, which a client that
            // resumes later must not mistake for one it saw.
            let offset = self.index.next_offset();
            self.index.dropped(key, offset);
            let resumable = event.with_offset(offset);
            return Ok(Delivery {
                event,
                recipients: Vec::new(),
                resumable,
                resuming: Vec::new(),
            });
        }
        let index = &mut self.index;
        let stream = self
            .streams
            .entry(key.clone())
            .or_insert_with(|| Stream::new(key.clone(), index.origin(key)));
        let offset = self.index.next_offset();
        let delivery = match stream.publish(event, offset, now, &self.config.history) {
            Ok(fanout) => {
                self.index.apply(key, fanout.history);
                Delivery {
                    recipients: fanout.recipients.iter().map(|(_, c)| c.clone()).collect(),
                    resuming: fanout.resuming.iter().map(|(_, c)| c.clone()).collect(),
                    resumable: fanout.resumable,
                    event: fanout.event,
                }
            }
            Err(refused) => {
                self.drop_if_idle(key);
                return Err(refused);
            }
        };
        if caches {
            if let StreamKey::Campaign(campaign) = key {
                for evicted in self.cache.touch(campaign) {
                    self.forget_cached(&evicted);
                }
            }
        }
        self.expire(now);
        self.drop_if_idle(key);
        Ok(delivery)
    }

    fn forget_cached(&mut self, campaign: &CampaignId) {
        let key = StreamKey::Campaign(campaign.clone());
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.forget_cached();
            self.drop_if_idle(&key);
        }
    }

    /// Revokes `account`: returns its connections, to close with 4401.
    pub fn revoke_account(&mut self, account: &AccountId, now: Instant) -> Vec<C> {
        self.registry
            .revoke_account(account, now)
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Revokes `campaign`'s ownership: returns its subscribers, to close with 4403.
    pub fn revoke_campaign(&mut self, campaign: &CampaignId, now: Instant) -> Vec<C> {
        self.registry.revoke_campaign(campaign, now);
        self.streams
            .get(&StreamKey::Campaign(campaign.clone()))
            .map(|stream| stream.revoke().map(|(_, c)| c.clone()).collect())
            .unwrap_or_default()
    }

    /// Graceful shutdown: refuses later subscriptions; returns every connection, to close with
    /// 1001.
    pub fn shutdown(&mut self) -> Vec<C> {
        self.registry.begin_shutdown().cloned().collect()
    }
}
