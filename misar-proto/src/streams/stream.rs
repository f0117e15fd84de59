//! [`Stream`]: one stream's subscribers and memory (§2.7, §2.13).

use std::collections::HashMap;

use crate::event::{EncodedEvent, EventClass};

use super::{ConnectionId, PublishError, StreamKey};

/// One stream (an account's inbox or a campaign): its subscribers, and for a campaign the
/// latest `progress` or the terminal event kept for late joiners.
///
/// `C` is whatever the caller needs to reach a connection (an id, an `Arc` of its shared
/// state). Every method is O(1) but [`publish`](Self::publish)'s answer, which lists the
/// recipients for the caller to walk.
///
/// Rules it holds:
/// - **Order**: calls are serialized by the caller (one lock per stream, or one thread), so
///   every subscriber sees the stream's events in one order.
/// - **Terminal sticks**: once a terminal event was published the campaign is finished: the
///   cached terminal event is never replaced, [`check`](Self::check) refuses later publishes
///   with [`PublishError::Finished`], and every later joiner gets it first (its session then
///   closes with 1000).
#[derive(Debug)]
pub struct Stream<C> {
    key: StreamKey,
    subscribers: Vec<(ConnectionId, C)>,
    /// Where each subscriber sits in `subscribers` (kept current by `leave`'s swap-remove).
    positions: HashMap<ConnectionId, usize>,
    /// A campaign's latest `progress` or its terminal event.
    last: Option<EncodedEvent>,
    finished: bool,
}

/// What [`Stream::join`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Joined {
    /// The event to queue first for the new subscriber: the campaign's latest `progress`, or
    /// its terminal event (after which its session closes with 1000).
    pub first: Option<EncodedEvent>,
    /// This is the stream's first subscriber: a multi-node broker subscribes upstream now.
    pub opened: bool,
}

/// What [`Stream::leave`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Left {
    /// The connection was a subscriber (and is not any more).
    pub removed: bool,
    /// It was the last one: a multi-node broker unsubscribes upstream now.
    pub closed: bool,
}

/// What [`Stream::publish`] decided: deliver `event` to every connection of `recipients`.
#[derive(Debug)]
#[must_use]
#[non_exhaustive]
pub struct Fanout<'a, C> {
    /// The event, encoded once; each recipient gets a refcounted clone.
    pub event: EncodedEvent,
    /// Who gets it, in no particular order.
    pub recipients: &'a [(ConnectionId, C)],
    /// The stream now keeps the event for late joiners (the caller's [`CacheOrder`](super::CacheOrder)
    /// records the campaign as most recently updated).
    pub cached: bool,
}

impl<C> Stream<C> {
    /// An empty stream.
    pub fn new(key: StreamKey) -> Self {
        Self {
            key,
            subscribers: Vec::new(),
            positions: HashMap::new(),
            last: None,
            finished: false,
        }
    }

    // ----- getters -----

    /// Which stream this is.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// The subscribers, in no particular order.
    pub fn subscribers(&self) -> &[(ConnectionId, C)] {
        &self.subscribers
    }

    /// How many subscribers there are.
    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// Whether there is no subscriber.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// The event a late joiner gets first, if any.
    pub fn cached(&self) -> Option<&EncodedEvent> {
        self.last.as_ref()
    }

    /// Whether the campaign's terminal event was published.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Nothing here is worth keeping: no subscriber, nothing cached. The caller may drop the
    /// stream (a new one is equivalent).
    pub fn is_idle(&self) -> bool {
        self.subscribers.is_empty() && self.last.is_none() && !self.finished
    }

    // ----- decisions -----

    /// Adds a subscriber (`id` must be new to this stream; a repeated id replaces nothing and
    /// is reported as not opening the stream).
    pub fn join(&mut self, id: ConnectionId, connection: C) -> Joined {
        if self.positions.contains_key(&id) {
            return Joined {
                first: None,
                opened: false,
            };
        }
        self.positions.insert(id, self.subscribers.len());
        self.subscribers.push((id, connection));
        Joined {
            first: self.last.clone(),
            opened: self.subscribers.len() == 1,
        }
    }

    /// Removes a subscriber; returns its handle, if it was one.
    pub fn leave(&mut self, id: ConnectionId) -> (Option<C>, Left) {
        let Some(position) = self.positions.remove(&id) else {
            return (
                None,
                Left {
                    removed: false,
                    closed: false,
                },
            );
        };
        if position >= self.subscribers.len() {
            // Cannot happen (positions are kept current); refuse to guess.
            return (
                None,
                Left {
                    removed: false,
                    closed: false,
                },
            );
        }
        let (_, connection) = self.subscribers.swap_remove(position);
        if let Some((moved, _)) = self.subscribers.get(position) {
            self.positions.insert(*moved, position);
        }
        if self.subscribers.is_empty() {
            // Give a burst's memory back (a stream with one subscriber left keeps a small one).
            self.subscribers = Vec::new();
            self.positions = HashMap::new();
        }
        (
            Some(connection),
            Left {
                removed: true,
                closed: self.subscribers.is_empty(),
            },
        )
    }

    /// Whether `event` may be published here now: a finished campaign refuses everything.
    pub fn check(&self) -> Result<(), PublishError> {
        match &self.key {
            super::StreamKey::Campaign(campaign) if self.finished => Err(PublishError::Finished {
                campaign: campaign.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether publishing `event` here (if [`check`](Self::check) allows it) keeps it for late
    /// joiners.
    pub fn caches(&self, event: &EncodedEvent) -> bool {
        self.key.keeps(event.class())
    }

    /// Publishes an event validated for this stream (see [`validate_inbox`](super::validate_inbox)
    /// and friends): refused if the campaign is finished; otherwise a campaign's `progress` or
    /// terminal event becomes what late joiners get, and the answer lists the recipients.
    pub fn publish(&mut self, event: EncodedEvent) -> Result<Fanout<'_, C>, PublishError> {
        self.check()?;
        let cached = self.caches(&event);
        if cached {
            self.last = Some(event.clone());
            self.finished = event.class() == EventClass::Terminal;
        }
        Ok(Fanout {
            event,
            recipients: &self.subscribers,
            cached,
        })
    }

    /// Forgets the cached event and whether the campaign finished (the cache's bound evicted
    /// it). Returns whether there was something to forget.
    pub fn forget_cached(&mut self) -> bool {
        let had = self.last.is_some() || self.finished;
        self.last = None;
        self.finished = false;
        had
    }

    /// The subscribers to close with 4403: the campaign's ownership changed (see
    /// [`Registry::revoke_campaign`](super::Registry::revoke_campaign), which records the
    /// revocation for handshakes still in flight).
    pub fn revoke(&self) -> &[(ConnectionId, C)] {
        &self.subscribers
    }
}
