//! [`Stream`]: one stream's subscribers and memory (§2.7, §2.13).

use std::collections::HashMap;
use std::time::Instant;

use crate::event::{EncodedEvent, EventClass};
use crate::resume::{Epoch, Recovery, ResumeRequest, decide};

use super::history::{History, HistoryChange, HistoryConfig};
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
/// - **Offsets and history** (§2.11): each event gets an offset above every earlier one, and
///   the stream keeps its recent events (in their opted-in encoding, `,"offset":N`) within
///   the caller's [`HistoryConfig`]; [`recover`](Self::recover) decides a resume request from
///   them. Opted-in subscribers get the opted-in encoding, the others the plain bytes, each
///   built once per event.
/// - **Terminal sticks**: once a terminal event was published the campaign is finished: the
///   cached terminal event is never replaced, [`check`](Self::check) refuses later publishes
///   with [`PublishError::Finished`], and every later joiner gets it first (its session then
///   closes with 1000).
#[derive(Debug)]
pub struct Stream<C> {
    key: StreamKey,
    /// Subscribers that get the plain §2.4 bytes.
    subscribers: Vec<(ConnectionId, C)>,
    /// Opted-in subscribers (§2.11): they get the encoding with `"offset"`.
    resuming: Vec<(ConnectionId, C)>,
    /// Where each subscriber sits: in `resuming` (true) or `subscribers`, at which index (kept
    /// current by `leave`'s swap-remove).
    positions: HashMap<ConnectionId, (bool, usize)>,
    /// A campaign's latest `progress` or its terminal event: plain, and with its offset.
    last: Option<(EncodedEvent, EncodedEvent)>,
    finished: bool,
    /// The offset of the latest event (or where the stream started).
    latest: u64,
    /// The highest offset that may exist but is not held (trimmed, expired, or before the
    /// stream started).
    lost_through: u64,
    history: History,
    /// The epoch of the offsets the caller's broker gave this stream, when the broker keeps
    /// the history ([`restart`](Self::restart)).
    epoch: Option<Epoch>,
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

/// What [`Stream::publish`] decided: deliver `event` to every connection of `recipients`,
/// and `resumable` to every connection of `resuming`.
#[derive(Debug)]
#[must_use]
#[non_exhaustive]
pub struct Fanout<'a, C> {
    /// The event, encoded once (plain §2.4 bytes); each recipient gets a refcounted clone.
    pub event: EncodedEvent,
    /// Who gets the plain bytes, in no particular order.
    pub recipients: &'a [(ConnectionId, C)],
    /// The opted-in encoding (`,"offset":N`), built once.
    pub resumable: EncodedEvent,
    /// Who gets the opted-in encoding (§2.11), in no particular order.
    pub resuming: &'a [(ConnectionId, C)],
    /// The stream now keeps the event for late joiners (the caller's [`CacheOrder`](super::CacheOrder)
    /// records the campaign as most recently updated).
    pub cached: bool,
    /// What the publish did to the history (for the [`HistoryIndex`](super::HistoryIndex)).
    pub history: HistoryChange,
}

/// What [`Stream::recover`] decided for an opted-in subscriber: queue `frame`'s `resume`
/// frame, then `replay`, then `first` (see [`ServerSession::start_resume`](crate::server::ServerSession::start_resume)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Recovered {
    /// The decision (its frame goes first).
    pub recovery: Recovery,
    /// The missed events, in order, in their opted-in encoding.
    pub replay: Vec<EncodedEvent>,
    /// The §2.7 late-joiner event (opted-in encoding), for `new` and an unrecovered
    /// position; also for a recovered position of a finished campaign whose terminal event
    /// the replay does not hold (a finished channel always ends with its terminal event).
    pub first: Option<EncodedEvent>,
    /// What expiring old events did to the history.
    pub history: HistoryChange,
}

impl<C> Stream<C> {
    /// An empty stream whose offsets start above `origin` (0 for a table's first stream of
    /// this key; see [`HistoryIndex::origin`](super::HistoryIndex::origin)).
    pub fn new(key: StreamKey, origin: u64) -> Self {
        Self {
            key,
            subscribers: Vec::new(),
            resuming: Vec::new(),
            positions: HashMap::new(),
            last: None,
            finished: false,
            latest: origin,
            lost_through: origin,
            history: History::default(),
            epoch: None,
        }
    }

    // ----- getters -----

    /// Which stream this is.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// The subscribers that get plain frames, in no particular order.
    pub fn subscribers(&self) -> &[(ConnectionId, C)] {
        &self.subscribers
    }

    /// The opted-in subscribers (§2.11), in no particular order.
    pub fn resuming(&self) -> &[(ConnectionId, C)] {
        &self.resuming
    }

    /// How many subscribers there are (both kinds).
    pub fn len(&self) -> usize {
        self.subscribers.len() + self.resuming.len()
    }

    /// Whether there is no subscriber.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The event a late joiner gets first, if any (plain bytes).
    pub fn cached(&self) -> Option<&EncodedEvent> {
        self.last.as_ref().map(|(plain, _)| plain)
    }

    /// The offset of the latest event (where the stream started, if none yet).
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// The highest offset that may exist but is not held: positions below it are not
    /// recovered.
    pub fn lost_through(&self) -> u64 {
        self.lost_through
    }

    /// Events held for resuming clients.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Payload bytes held for resuming clients.
    pub fn history_bytes(&self) -> usize {
        self.history.bytes()
    }

    /// Whether the campaign's terminal event was published.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Nothing here is worth keeping: no subscriber, nothing cached. The caller may drop the
    /// stream (a new one is equivalent).
    pub fn is_idle(&self) -> bool {
        self.is_empty() && self.last.is_none() && !self.finished && self.history.is_empty()
    }

    // ----- decisions -----

    /// Adds a subscriber (`id` must be new to this stream; a repeated id replaces nothing and
    /// is reported as not opening the stream).
    pub fn join(&mut self, id: ConnectionId, connection: C) -> Joined {
        self.join_as(id, connection, false)
    }

    /// Adds a subscriber that gets the plain frames (`resuming: false`) or, opted in
    /// (§2.11), the encoding with `"offset"` (`resuming: true`; its `first` is then the
    /// opted-in encoding, and the caller decides its start with [`recover`](Self::recover),
    /// or with its broker's history).
    pub fn join_as(&mut self, id: ConnectionId, connection: C, resuming: bool) -> Joined {
        if self.positions.contains_key(&id) {
            return Joined {
                first: None,
                opened: false,
            };
        }
        let list = if resuming {
            &mut self.resuming
        } else {
            &mut self.subscribers
        };
        self.positions.insert(id, (resuming, list.len()));
        list.push((id, connection));
        let first = self
            .last
            .as_ref()
            .map(|(plain, offset)| if resuming { offset } else { plain }.clone());
        Joined {
            first,
            opened: self.len() == 1,
        }
    }

    /// The §2.11 decision for an opted-in subscriber, from this stream's history (events
    /// older than `history.max_age` are dropped first): see [`decide`]. The caller passes the
    /// answer to the subscriber's session ([`ServerSession::start_resume`](crate::server::ServerSession::start_resume))
    /// under the same lock as the join, so no event falls between the replay and live ones.
    pub fn recover(
        &mut self,
        request: &ResumeRequest,
        epoch: &Epoch,
        now: Instant,
        history: &HistoryConfig,
    ) -> Recovered {
        let change = self.expire(now, history);
        let recovery = decide(request, epoch, self.latest, self.lost_through);
        let replay: Vec<EncodedEvent> = match recovery.replay_after {
            Some(after) => self.history.after(after).cloned().collect(),
            None => Vec::new(),
        };
        let ends = replay
            .last()
            .is_some_and(|event| event.class() == EventClass::Terminal);
        let first = match &self.last {
            // A finished channel always ends with its terminal event.
            Some((_, offset)) if self.finished && !ends => Some(offset.clone()),
            Some((_, offset)) if recovery.replay_after.is_none() => Some(offset.clone()),
            _ => None,
        };
        Recovered {
            recovery,
            replay,
            first,
            history: change,
        }
    }

    /// Drops held events older than `history.max_age`.
    pub fn expire(&mut self, now: Instant, history: &HistoryConfig) -> HistoryChange {
        let Some(cutoff) = now.checked_sub(history.max_age) else {
            return HistoryChange::default();
        };
        let (change, dropped) = self.history.expire(cutoff);
        self.lost(dropped);
        change
    }

    /// Drops the oldest held event (the table's byte budget), if its offset is `offset`
    /// (else nothing: the caller's view was stale).
    pub fn drop_oldest(&mut self, offset: u64) -> HistoryChange {
        if self
            .history
            .after(offset.saturating_sub(1))
            .next()
            .and_then(EncodedEvent::offset)
            != Some(offset)
        {
            return HistoryChange::default();
        }
        let (change, dropped) = self.history.drop_oldest();
        self.lost(dropped);
        change
    }

    /// Drops the whole history (e.g. the broker's epoch changed).
    pub fn clear_history(&mut self) -> HistoryChange {
        let (change, dropped) = self.history.clear();
        self.lost(dropped);
        change
    }

    /// The epoch of the broker's offsets this stream follows (`None` until
    /// [`restart`](Self::restart) set one; a table that numbers its own events never does).
    pub fn epoch(&self) -> Option<&Epoch> {
        self.epoch.as_ref()
    }

    /// Follows a new epoch of the broker's offsets (§2.11: a broker that keeps the history
    /// found it gone and started numbering again): the latest offset and what was lost go
    /// back to 0 and the history is dropped, so the new epoch's offsets are accepted by
    /// [`publish`](Self::publish). Subscribers, the cached event and whether the campaign
    /// finished stay. The caller closes the opted-in subscribers that hold a position of the
    /// old epoch (they resume and are told `recovered: false`).
    pub fn restart(&mut self, epoch: Epoch) -> HistoryChange {
        let (change, _) = self.history.clear();
        self.latest = 0;
        self.lost_through = 0;
        self.epoch = Some(epoch);
        change
    }

    fn lost(&mut self, dropped: Option<u64>) {
        if let Some(offset) = dropped {
            self.lost_through = self.lost_through.max(offset);
        }
    }

    /// Removes a subscriber; returns its handle, if it was one.
    pub fn leave(&mut self, id: ConnectionId) -> (Option<C>, Left) {
        let not_found = Left {
            removed: false,
            closed: false,
        };
        let Some((resuming, position)) = self.positions.remove(&id) else {
            return (None, not_found);
        };
        let list = if resuming {
            &mut self.resuming
        } else {
            &mut self.subscribers
        };
        if position >= list.len() {
            // Cannot happen (positions are kept current); refuse to guess.
            return (None, not_found);
        }
        let (_, connection) = list.swap_remove(position);
        if let Some((moved, _)) = list.get(position) {
            self.positions.insert(*moved, (resuming, position));
        }
        if list.is_empty() {
            // Give a burst's memory back (a stream with one subscriber left keeps a small one).
            *list = Vec::new();
        }
        if self.positions.is_empty() {
            self.positions = HashMap::new();
        }
        (
            Some(connection),
            Left {
                removed: true,
                closed: self.is_empty(),
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
    /// and friends) at `offset`: refused if the campaign is finished, or if `offset` is not
    /// above the latest ([`PublishError::StaleOffset`]: a broker relayed it twice); otherwise
    /// the event joins the history (within `history`'s bounds), a campaign's `progress` or
    /// terminal event becomes what late joiners get, and the answer lists the recipients.
    pub fn publish(
        &mut self,
        event: EncodedEvent,
        offset: u64,
        now: Instant,
        history: &HistoryConfig,
    ) -> Result<Fanout<'_, C>, PublishError> {
        self.check()?;
        if offset <= self.latest {
            return Err(PublishError::StaleOffset {
                offset,
                latest: self.latest,
            });
        }
        self.latest = offset;
        let resumable = event.with_offset(offset);
        let cached = self.caches(&event);
        if cached {
            self.last = Some((event.clone(), resumable.clone()));
            self.finished = event.class() == EventClass::Terminal;
        }
        let mut change = self.expire(now, history);
        let (pushed, dropped) = self
            .history
            .push(resumable.clone(), now, history.max_events);
        self.lost(dropped);
        change.oldest_after = pushed.oldest_after;
        change.added += pushed.added;
        change.freed += pushed.freed;
        Ok(Fanout {
            event,
            recipients: &self.subscribers,
            resumable,
            resuming: &self.resuming,
            cached,
            history: change,
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
    pub fn revoke(&self) -> impl Iterator<Item = &(ConnectionId, C)> {
        self.subscribers.iter().chain(&self.resuming)
    }
}
