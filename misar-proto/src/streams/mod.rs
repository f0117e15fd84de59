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
//! let mut table: Streams<&str> = Streams::new(StreamsConfig::default())?;
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
use crate::route::{CampaignId, Channel};

pub use cache::CacheOrder;
pub use publish::{
    DEFAULT_MAX_EVENT_BYTES, PublishError, PublishRules, validate_campaign, validate_inbox,
    validate_relayed,
};
pub use registry::{Admission, Registry, RevocationMark, SubscribeError};
pub use stream::{Fanout, Joined, Left, Stream};

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
}

/// What a publish decided: queue `event` for each of `recipients`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Delivery<C> {
    /// The event, encoded once.
    pub event: EncodedEvent,
    /// The connections to queue it for.
    pub recipients: Vec<C>,
}

/// The whole table for one thread: a [`Registry`], the [`Stream`]s, the [`CacheOrder`].
///
/// See the [module docs](self) for an example.
#[derive(Debug)]
pub struct Streams<C> {
    config: StreamsConfig,
    registry: Registry<C>,
    streams: HashMap<StreamKey, Stream<C>>,
    cache: CacheOrder,
    /// Each connection's account and stream (for unsubscribe by id).
    members: HashMap<ConnectionId, (AccountId, StreamKey)>,
}

impl<C: Clone> Streams<C> {
    /// An empty table, if `config` can work.
    pub fn new(config: StreamsConfig) -> Result<Self, StreamsConfigError> {
        config.validate()?;
        Ok(Self {
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
        let admission = self
            .registry
            .admit(account, stream, mark, connection.clone(), now)?;
        let joined = self
            .streams
            .entry(stream.clone())
            .or_insert_with(|| Stream::new(stream.clone()))
            .join(admission.id, connection);
        self.members
            .insert(admission.id, (account.clone(), stream.clone()));
        Ok(Subscribed {
            id: admission.id,
            first: joined.first,
            revoked: admission.revoked,
            opened: joined.opened,
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
        if stream.is_idle() {
            self.streams.remove(&key);
        }
        left
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
    /// on this node or another).
    pub fn deliver(
        &mut self,
        key: &StreamKey,
        event: EncodedEvent,
        now: Instant,
    ) -> Result<Delivery<C>, PublishError> {
        // `now` ages the history of §2.11 (kept here next); nothing ages yet.
        let _ = now;
        let caches = key.keeps(event.class());
        let delivery = match self.streams.get_mut(key) {
            Some(stream) => {
                let fanout = stream.publish(event)?;
                Delivery {
                    recipients: fanout.recipients.iter().map(|(_, c)| c.clone()).collect(),
                    event: fanout.event,
                }
            }
            // Nobody listens and nothing is to be kept: nothing to do.
            None if !caches => {
                return Ok(Delivery {
                    event,
                    recipients: Vec::new(),
                });
            }
            None => {
                let mut stream = Stream::new(key.clone());
                let fanout = stream.publish(event)?;
                let event = fanout.event;
                self.streams.insert(key.clone(), stream);
                Delivery {
                    event,
                    recipients: Vec::new(),
                }
            }
        };
        if caches {
            if let StreamKey::Campaign(campaign) = key {
                for evicted in self.cache.touch(campaign) {
                    self.forget_cached(&evicted);
                }
            }
        }
        Ok(delivery)
    }

    fn forget_cached(&mut self, campaign: &CampaignId) {
        let key = StreamKey::Campaign(campaign.clone());
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.forget_cached();
            if stream.is_idle() {
                self.streams.remove(&key);
            }
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
            .map(|stream| stream.revoke().iter().map(|(_, c)| c.clone()).collect())
            .unwrap_or_default()
    }

    /// Graceful shutdown: refuses later subscriptions; returns every connection, to close with
    /// 1001.
    pub fn shutdown(&mut self) -> Vec<C> {
        self.registry.begin_shutdown().cloned().collect()
    }
}
