//! The receiving side: one task per broker owning one RESP3 connection that holds the node's
//! subscriptions, delivers what arrives to the attached hubs, fetches the shared latest event
//! of campaigns that open, and reconnects with backoff when the connection is lost.
//!
//! # Why one RESP3 connection, and why a fetch is ordered
//!
//! A late joiner's fetch (`MGET {prefix}:last:{id}`) goes over the *same* connection as the
//! subscription. Redis executes commands one at a time and writes a connection's replies and
//! pushes in execution order, and a publish of a `progress`/terminal event sets the key and
//! publishes in one transaction. So, reading the connection in order, after `SUBSCRIBE` was
//! confirmed:
//!
//! - a message that arrives before the fetch's reply was published before the fetch ran, and
//!   the key then holds the last such message (already delivered, or about to be, in order);
//! - a message that arrives after it is newer than the fetched value.
//!
//! Hence the rule applied here: a fetched value is delivered only if no message of its
//! campaign arrived between sending the fetch and reading its reply (if one did, the value is
//! not newer than what was delivered), and the hub skips it when it already caches those
//! exact bytes ([`HubDelivery::deliver_latest`]). A client therefore never sees a campaign's
//! events out of order, and sees the fetched event once (unless its hub's bounded cache
//! dropped the campaign in between, when a harmless repeat is possible).
//!
//! # Interest
//!
//! The hooks ([`Broker::stream_opened`] / [`Broker::stream_closed`], called under a hub's
//! lock) only count subscribers per stream and mark the stream dirty; this task turns the
//! dirty set into `SUBSCRIBE` / `UNSUBSCRIBE` batches. A stream that closes and reopens
//! before the task looks costs no command at all.
//!
//! [`Broker::stream_opened`]: crate::hub::Broker::stream_opened
//! [`Broker::stream_closed`]: crate::hub::Broker::stream_closed

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ::redis::{PushInfo, PushKind, RedisError, Script, Value};
use bytes::Bytes;
use futures_util::future::join_all;
use misar_proto::backoff::Backoff;
use misar_proto::close::Pace;
use misar_proto::event::{EncodedEvent, EventClass};
use misar_proto::resume::{Epoch, Recovery, ResumeRequest, decide};
use misar_proto::route::CampaignId;
use misar_proto::streams::validate_relayed;
use std::sync::LazyLock;
use tokio::time::Instant;

use super::connection::Connection;
use super::inbound::{BoundedReceiver, Inbound, bounded};
use super::names::{Target, decode_revocation, events_of, parse_message};
use super::publisher::millis;
use super::{Chain, RedisBrokerError, Shared};
use crate::hub::{HubDelivery, PendingResume, StreamKey, lock};

/// Channels (or keys) per `SUBSCRIBE` / `UNSUBSCRIBE` / `MGET`: large enough to resubscribe
/// thousands of streams in a few round trips, small enough to keep each reply modest.
const BATCH: usize = 512;

/// Pushes handled in one go before the task looks at its other duties again.
const DRAIN_BATCH: usize = 256;

/// What the hooks tell the task.
#[derive(Default)]
pub(super) struct Interest {
    /// Subscribers per stream, over every attached hub.
    counts: HashMap<StreamKey, usize>,
    /// Streams whose count crossed zero (either way) since the task last looked.
    dirty: HashSet<StreamKey>,
    /// Campaigns opened since the task last looked: their shared latest event is fetched.
    fetch: HashSet<CampaignId>,
    /// Bumped on every change ([`RedisBroker::sync`](super::RedisBroker::sync) waits for it).
    pub(super) generation: u64,
    /// Streams subscribed upstream, their subscription confirmed on the current connection:
    /// an event published from now on reaches this node
    /// ([`Broker::ready`](crate::hub::Broker::ready)). Changed only through
    /// [`Shared::update_live`], which keeps [`RedisStats::subscribed_streams`](super::RedisStats)
    /// and the readiness wake-up in step.
    pub(super) live: HashSet<StreamKey>,
}

impl Interest {
    pub(super) fn opened(&mut self, stream: &StreamKey) {
        let count = self.counts.entry(stream.clone()).or_insert(0);
        *count = count.saturating_add(1);
        if *count == 1 {
            self.dirty.insert(stream.clone());
        }
        if let StreamKey::Campaign(campaign) = stream {
            // Also when another hub already had the stream open: the newcomer has no cache.
            self.fetch.insert(campaign.clone());
        }
        self.generation = self.generation.wrapping_add(1);
    }

    pub(super) fn closed(&mut self, stream: &StreamKey) {
        if let Some(count) = self.counts.get_mut(stream) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.counts.remove(stream);
                self.dirty.insert(stream.clone());
            }
        }
        self.generation = self.generation.wrapping_add(1);
    }

    /// After a reconnection nothing is subscribed: every stream is dirty and every campaign
    /// is fetched (to catch up on a `progress` or terminal event missed meanwhile).
    fn reset(&mut self) {
        self.live.clear();
        self.dirty = self.counts.keys().cloned().collect();
        self.fetch = self
            .counts
            .keys()
            .filter_map(|stream| match stream {
                StreamKey::Campaign(campaign) => Some(campaign.clone()),
                StreamKey::Inbox(_) => None,
            })
            .collect();
    }
}

/// What [`RedisBroker::sync`](super::RedisBroker::sync) and `connect` watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Progress {
    /// The interest generation the upstream subscriptions reflect.
    pub(super) applied: u64,
    /// The subscriber connection is up and its subscriptions are in place.
    pub(super) connected: bool,
    /// Bumped whenever [`Interest::live`] changed (readiness waits for it).
    pub(super) confirmed: u64,
}

/// An opted-in connection waiting for its start ([`Broker::resume`](crate::hub::Broker::resume)).
pub(super) struct Resume {
    pub(super) stream: StreamKey,
    pub(super) request: ResumeRequest,
    pub(super) start: PendingResume,
}

/// The read of a resume, one atomic script (so the epoch, the latest offset and the history
/// agree). Creates the stream's epoch if it has none (as a publish would: the client then
/// holds a position of the epoch the next publish uses). Answers, as bulk strings:
/// `epoch, latest, oldest, last, done, (offset, json)*` where `oldest` is the offset of the
/// oldest entry within the age bound ('' when none), `last` a campaign's framed latest
/// event ('' when none), `done` '1' for a finished campaign, and the pairs the entries after
/// the client's offset when it is of this epoch (an entry past the age bound is not
/// returned, nor any before it). KEYS: meta, history[, last, done]. ARGV: new epoch, meta
/// ttl ms, the client's epoch ('' for `new`), its offset, max age ms, the offset after it
/// (as a decimal string: Lua's numbers are doubles, exact only up to 2^53).
///
/// Only the entries after the client's offset are read (`XRANGE history <offset + 1> +`)
/// when the oldest entry is within the age bound, the usual case: entries are appended in
/// time order, so all after it are too. Otherwise the whole history is scanned for the
/// first entry within the bound.
static RESUME_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESUME_READ));

const RESUME_READ: &str = r"
-- Redis 6: writes after TIME need effects replication (the default from Redis 7 on).
pcall(redis.replicate_commands)
local epoch = redis.call('HGET', KEYS[1], 'e')
local latest = '0'
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', '0')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  latest = redis.call('HGET', KEYS[1], 'o') or '0'
end
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[5])
local after = nil
if ARGV[3] == epoch then after = tonumber(ARGV[4]) end
local result = {epoch, latest, '', '', '0'}
local function read(entry)
  local fields = entry[2]
  local t, d = nil, nil
  for i = 1, #fields - 1, 2 do
    if fields[i] == 't' then t = tonumber(fields[i + 1]) elseif fields[i] == 'd' then d = fields[i + 1] end
  end
  return string.match(entry[1], '^(%d+)'), t, d
end
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
if oldest then
  local offset, t = read(oldest)
  if t and t >= cutoff then
    -- Everything held is within the age bound: read only what the client missed.
    result[3] = offset
    if after then
      for _, entry in ipairs(redis.call('XRANGE', KEYS[2], ARGV[6], '+')) do
        local o, _, d = read(entry)
        result[#result + 1] = o
        result[#result + 1] = d or ''
      end
    end
  else
    local fresh = false
    for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
      local o, t, d = read(entry)
      if not fresh and t and t >= cutoff then
        fresh = true
        result[3] = o
      end
      if fresh and after and tonumber(o) > after then
        result[#result + 1] = o
        result[#result + 1] = d or ''
      end
    end
  end
end
if #KEYS == 4 then
  result[4] = redis.call('GET', KEYS[3]) or ''
  result[5] = tostring(redis.call('EXISTS', KEYS[4]))
end
return result
";

/// The connection was lost (or a command on it failed): reconnect.
#[derive(Debug)]
struct Lost(Option<RedisError>);

impl From<RedisError> for Lost {
    fn from(error: RedisError) -> Self {
        Lost(Some(error))
    }
}

/// The task: connect, serve until the connection is lost, report the gap, back off, again.
pub(super) async fn run(shared: Arc<Shared>, mut backoff: Backoff) {
    let mut established = false;
    loop {
        match Session::open(&shared).await {
            Ok(mut session) => {
                backoff.reset();
                // Redis is back: the publishing side need not wait out its own backoff.
                shared.publisher.redis_is_back();
                if established {
                    shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::record::redis_reconnect();
                    tracing::info!(
                        streams = shared.stats.subscribed.load(Ordering::Relaxed),
                        "redis broker: subscription re-established"
                    );
                }
                established = true;
                shared.progress.send_modify(|p| p.connected = true);
                let lost = session.serve(&shared).await;
                shared.publisher.redis_is_gone();
                shared.update_live(|interest| interest.live.clear());
                if let Some(error) = &lost.0 {
                    tracing::warn!(error = %Chain(error), "redis broker: subscriber connection error");
                }
                shared.gap(
                    "lost the subscription connection; events published until it is \
                     re-established are not delivered on this node",
                );
                // Last, so whoever waits for the disconnection sees the gap counted.
                shared.progress.send_modify(|p| p.connected = false);
            }
            Err(error) => {
                shared
                    .stats
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                // Their history cannot be read now: those clients come back later (1011),
                // rather than waiting here for as long as Redis is away.
                let failed = std::mem::take(&mut *lock(&shared.resumes));
                shared
                    .stats
                    .resume_errors
                    .fetch_add(failed.len() as u64, Ordering::Relaxed);
                drop(failed);
                tracing::warn!(
                    error = %Chain(&error),
                    "redis broker: could not connect the subscriber"
                );
            }
        }
        tokio::time::sleep(backoff.next_delay(Pace::Normal)).await;
    }
}

struct Session {
    connection: Connection,
    pushes: BoundedReceiver,
    /// On a cluster: streams whose subscription failed (their master is unreachable), tried
    /// again at `retry_at`.
    failed: HashSet<StreamKey>,
    retry_at: Option<Instant>,
    retry: Backoff,
}

impl Session {
    /// Connects and subscribes to the revocation channel and every stream with subscribers.
    async fn open(shared: &Shared) -> Result<Session, RedisBrokerError> {
        let (tx, pushes) = bounded(
            shared.config.inbound_max_messages,
            shared.config.inbound_max_bytes,
            Arc::clone(&shared.stats.inbound_peak_bytes),
        );
        let mut connection = shared.upstream.connect(&shared.config, Some(tx)).await?;
        let revoke = [shared.names.revoke().to_vec()];
        for result in connection.subscribe(&revoke).await {
            result.map_err(RedisBrokerError::from_command)?;
        }
        shared.update_live(Interest::reset);
        let mut session = Session {
            connection,
            pushes,
            failed: HashSet::new(),
            retry_at: None,
            retry: Backoff::new(shared.config.backoff, super::seed()),
        };
        session
            .sync_interest(shared)
            .await
            .map_err(|lost| match lost.0 {
                Some(error) => RedisBrokerError::from_command(error),
                None => RedisBrokerError::ConnectionLost,
            })?;
        Ok(session)
    }

    /// A cluster master's connection dropped: a gap for this node (the streams of that master
    /// missed events; which ones is the library's business, so all are confirmed again).
    fn master_lost(&mut self, shared: &Shared) {
        shared.gap(
            "lost a cluster master's connection; events of its streams published until it \
             is back are not delivered on this node",
        );
        self.failed.clear();
        self.retry_at = None;
        shared.update_live(Interest::reset);
        shared.wake.notify_one();
    }

    /// A `sunsubscribe` push for `channel`: when this node did not ask for it (it still
    /// counts the stream as subscribed), the stream's slot moved to another master. Events
    /// published there until the new subscription is confirmed are not delivered here: a gap,
    /// counted; the stream is subscribed again (and new connections wait for that).
    fn moved(&mut self, shared: &Shared, channel: &[u8]) {
        let Some(Target::Stream(stream)) = shared.names.parse(channel) else {
            return;
        };
        let moved = shared.update_live(|interest| {
            // Not live: the answer to this node's own SUNSUBSCRIBE.
            let moved = interest.live.remove(&stream);
            if moved {
                interest.dirty.insert(stream);
            }
            moved
        });
        if moved {
            shared.gap("a stream's slot moved to another master; subscribing there");
            shared.wake.notify_one();
        }
    }

    /// Delivers what arrives and follows the interest until the connection is lost.
    async fn serve(&mut self, shared: &Shared) -> Lost {
        let mut health = tokio::time::interval(shared.config.health_check_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.reset();
        loop {
            let retry_at = self.retry_at;
            let step = tokio::select! {
                push = self.pushes.recv() => match push {
                    Some(push) => self
                        .inbound(shared, push, None)
                        .and_then(|()| self.drain(shared, None, DRAIN_BATCH)),
                    None => Err(Lost(None)),
                },
                () = shared.wake.notified() => self.sync_interest(shared).await,
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)),
                    if retry_at.is_some() => {
                    // A cluster master that was unreachable: its streams are tried again.
                    self.retry_at = None;
                    let failed = std::mem::take(&mut self.failed);
                    lock(&shared.interest).dirty.extend(failed);
                    self.sync_interest(shared).await
                }
                _ = health.tick() => {
                    // A half-open TCP connection (Redis host gone without a reset) is only
                    // noticed by asking: PING, bounded by the command timeout.
                    ::redis::cmd("PING")
                        .query_async::<()>(&mut self.connection)
                        .await
                        .map_err(Lost::from)
                }
            };
            if let Err(lost) = step {
                return lost;
            }
        }
    }

    /// Brings the upstream subscriptions in line with the interest, and fetches the latest
    /// event of campaigns that opened.
    async fn sync_interest(&mut self, shared: &Shared) -> Result<(), Lost> {
        // Before the interest: a resume's stream was opened before the resume was queued, so
        // the interest read next covers it.
        let resumes = std::mem::take(&mut *lock(&shared.resumes));
        let (dirty, fetch, generation) = {
            let mut interest = lock(&shared.interest);
            let dirty = std::mem::take(&mut interest.dirty);
            let fetch: Vec<CampaignId> = std::mem::take(&mut interest.fetch)
                .into_iter()
                .filter(|c| {
                    interest
                        .counts
                        .contains_key(&StreamKey::Campaign(c.clone()))
                })
                .collect();
            let mut subscribe = Vec::new();
            let mut unsubscribe = Vec::new();
            for stream in dirty {
                let wanted = interest.counts.contains_key(&stream);
                match (wanted, interest.live.contains(&stream)) {
                    (true, false) => subscribe.push(stream),
                    (false, true) => unsubscribe.push(stream),
                    _ => {}
                }
            }
            ((subscribe, unsubscribe), fetch, interest.generation)
        };
        let (subscribe, unsubscribe) = dirty;
        for batch in unsubscribe.chunks(BATCH) {
            let channels: Vec<Vec<u8>> = batch.iter().map(|s| shared.names.channel(s)).collect();
            shared.update_live(|interest| {
                for stream in batch {
                    interest.live.remove(stream);
                }
            });
            self.connection.unsubscribe(&channels).await?;
            for stream in batch {
                self.failed.remove(stream);
            }
        }
        for batch in subscribe.chunks(BATCH) {
            let channels: Vec<Vec<u8>> = batch.iter().map(|s| shared.names.channel(s)).collect();
            let sent = std::time::Instant::now();
            let results = self.connection.subscribe(&channels).await;
            crate::metrics::record::redis_subscribed(sent.elapsed());
            let mut confirmed = Vec::with_capacity(batch.len());
            for (stream, result) in batch.iter().zip(results) {
                match result {
                    Ok(()) => confirmed.push(stream.clone()),
                    // One Redis: the connection is in trouble; start over.
                    Err(error) if !self.connection.is_cluster() => return Err(Lost(Some(error))),
                    // A cluster: this stream's master is unreachable; the others go on.
                    Err(error) => {
                        tracing::warn!(
                            error = %Chain(&error),
                            "redis broker: a sharded subscription failed; retrying"
                        );
                        self.failed.insert(stream.clone());
                    }
                }
            }
            shared.update_live(|interest| interest.live.extend(confirmed));
        }
        if self.failed.is_empty() {
            self.retry.reset();
        } else if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.retry.next_delay(Pace::Normal));
        }
        if !fetch.is_empty() {
            self.fetch_latest(shared, &fetch).await?;
        }
        if !resumes.is_empty() {
            self.resume(shared, resumes).await?;
        }
        shared.progress.send_if_modified(|p| {
            let changed = p.applied != generation;
            p.applied = generation;
            changed
        });
        Ok(())
    }

    /// Decides the start of opted-in connections from the Redis history, one pipelined
    /// round trip per [`BATCH`], over this connection, after their streams' subscriptions
    /// are confirmed: an event published before the read is in it (a copy also arriving
    /// live is dropped by the session's floor), one published after it arrives on the
    /// channel. A Redis error fails the batch's connections (1011), never a silent gap.
    async fn resume(&mut self, shared: &Shared, resumes: Vec<Resume>) -> Result<(), Lost> {
        // What the connection left closed meanwhile has no subscription here: drop it (the
        // connection is gone).
        let resumes: Vec<Resume> = {
            let interest = lock(&shared.interest);
            resumes
                .into_iter()
                .filter(|resume| interest.live.contains(&resume.stream))
                .collect()
        };
        // Whatever arrived so far goes to the hubs first (in order, before the decisions).
        self.drain(shared, None, usize::MAX)?;
        let mut resumes = resumes.into_iter().peekable();
        while resumes.peek().is_some() {
            // Connections asking for the same stream from the same position (a crowd that
            // lost the same node) share one read and one decision.
            let batch = group(resumes.by_ref().take(BATCH));
            let cluster = self.connection.is_cluster();
            let reads = join_all(batch.iter().map(|(resume, _)| {
                let names = &shared.names;
                let mut invocation = RESUME_SCRIPT.key(names.meta(&resume.stream));
                invocation.key(names.history(&resume.stream));
                if let StreamKey::Campaign(campaign) = &resume.stream {
                    invocation
                        .key(names.last(campaign))
                        .key(names.done(campaign));
                }
                let (epoch, offset) = match &resume.request {
                    ResumeRequest::From(position) => (position.epoch.to_string(), position.offset),
                    _ => (String::new(), 0),
                };
                invocation
                    .arg(crate::hub::draw_epoch().as_str())
                    .arg(millis(shared.config.meta_ttl()))
                    .arg(epoch)
                    .arg(offset)
                    .arg(millis(shared.config.history.max_age))
                    .arg(offset.saturating_add(1));
                // All in flight at once: one Redis answers them in order on the one
                // connection (one round trip); a cluster routes each to its stream's master.
                let mut connection = self.connection.clone();
                async move {
                    invocation
                        .invoke_async::<Vec<Vec<u8>>>(&mut connection)
                        .await
                }
            }))
            .await;
            let mut lost = None;
            for ((resume, alike), read) in batch.into_iter().zip(reads) {
                let error = match read {
                    Ok(reply) => {
                        self.start(shared, resume, alike, reply);
                        continue;
                    }
                    Err(error) => error,
                };
                let group = std::iter::once(resume).chain(alike).collect();
                if !cluster && super::publisher::breaks_connection(&error) {
                    fail_all(shared, group, "the connection was lost");
                    lost = Some(error);
                } else {
                    tracing::warn!(error = %Chain(&error), "redis broker: resume read failed");
                    fail_all(shared, group, "Redis refused the read");
                }
            }
            if let Some(error) = lost {
                return Err(Lost(Some(error)));
            }
        }
        Ok(())
    }

    /// Starts an opted-in connection, and those that asked for the same stream from the same
    /// position (`alike`), from their one read (see [`RESUME_READ`]): one decision, whose
    /// replay (shared buffers) every one of them gets.
    fn start(&mut self, shared: &Shared, resume: Resume, alike: Vec<Resume>, reply: Vec<Vec<u8>>) {
        match decision(shared, &resume, reply) {
            Some((recovery, replay, first)) => {
                let count = 1 + alike.len() as u64;
                shared.stats.resumes.fetch_add(count, Ordering::Relaxed);
                for other in alike {
                    other
                        .start
                        .complete(&recovery, replay.clone(), first.clone());
                }
                resume.start.complete(&recovery, replay, first);
            }
            None => fail_all(
                shared,
                std::iter::once(resume).chain(alike).collect(),
                "a resume read is not readable",
            ),
        }
    }

    /// Fetches the shared latest event of `campaigns` and delivers each one that is newer than
    /// what arrived on the channel (see the module docs for why this is ordered).
    async fn fetch_latest(
        &mut self,
        shared: &Shared,
        campaigns: &[CampaignId],
    ) -> Result<(), Lost> {
        // Whatever arrived so far was published before the fetch runs: deliver it first, so
        // it is not mistaken for a message that raced the fetch.
        self.drain(shared, None, usize::MAX)?;
        let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(campaigns.len());
        for batch in campaigns.chunks(BATCH) {
            let keys: Vec<Vec<u8>> = batch.iter().map(|c| shared.names.last(c)).collect();
            values.extend(self.connection.get_many(&keys).await?);
        }
        // Everything read before the replies: messages that raced the fetch.
        let mut raced: HashSet<CampaignId> = HashSet::new();
        self.drain(shared, Some(&mut raced), usize::MAX)?;
        for (campaign, value) in campaigns.iter().zip(values) {
            let Some(value) = value else { continue };
            if raced.contains(campaign) {
                continue;
            }
            let stream = StreamKey::Campaign(campaign.clone());
            let value = Bytes::from(value);
            let framed = parse_message(&value);
            let checked = match framed {
                Some((position, start)) => {
                    validate_relayed(&stream, value.slice(start..), &shared.rules)
                        .map(|event| (position, event))
                        .map_err(|error| error.to_string())
                }
                None => Err("not framed with its position".to_owned()),
            };
            match checked {
                Ok((position, event)) => {
                    shared.each_hub(|hub| {
                        // A hub that knows the campaign finished keeps its terminal event, and
                        // one past this offset has it already.
                        if hub
                            .deliver_latest_in(
                                &stream,
                                event.clone(),
                                &position.epoch,
                                position.offset,
                            )
                            .is_ok_and(|report| report.delivered > 0)
                        {
                            shared.stats.fetched.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                Err(error) => {
                    shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        campaign = campaign.as_str(),
                        error = %error,
                        "redis broker: the cached latest event is not valid; ignored"
                    );
                }
            }
        }
        Ok(())
    }

    /// Handles up to `max` pushes already received, without waiting.
    fn drain(
        &mut self,
        shared: &Shared,
        mut raced: Option<&mut HashSet<CampaignId>>,
        max: usize,
    ) -> Result<(), Lost> {
        for _ in 0..max {
            match self.pushes.try_recv() {
                Ok(push) => self.inbound(shared, push, raced.as_deref_mut())?,
                Err(false) => return Ok(()),
                Err(true) => return Err(Lost(None)),
            }
        }
        Ok(())
    }

    /// What the bounded path brought: a push, or the news that it overflowed.
    fn inbound(
        &mut self,
        shared: &Shared,
        inbound: Inbound,
        raced: Option<&mut HashSet<CampaignId>>,
    ) -> Result<(), Lost> {
        match inbound {
            Inbound::Push(push, _) => self.handle(shared, push, raced),
            Inbound::Overflow => {
                shared.stats.overflows.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    max_messages = shared.config.inbound_max_messages,
                    max_bytes = shared.config.inbound_max_bytes,
                    "redis broker: this node cannot keep up with Redis; dropping the \
                     subscriber connection (a gap) to resubscribe"
                );
                Err(Lost(None))
            }
        }
    }

    /// One push from Redis: a message to deliver, or the library saying the connection died.
    fn handle(
        &mut self,
        shared: &Shared,
        push: PushInfo,
        raced: Option<&mut HashSet<CampaignId>>,
    ) -> Result<(), Lost> {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {}
            // On a cluster, one master's connection: the library reconnects it and
            // resubscribes its channels; this node counts the gap and confirms every
            // subscription again before promising a new connection anything.
            PushKind::Disconnection if self.connection.is_cluster() => {
                self.master_lost(shared);
                return Ok(());
            }
            PushKind::Disconnection => return Err(Lost(None)),
            // A master gave up a slot (resharding, failover): Redis unsubscribes its shard
            // channels there. One this node still wants is subscribed again (the library
            // routes it to the slot's new owner).
            PushKind::SUnsubscribe => {
                if let Some(Value::BulkString(channel)) = push.data.first() {
                    self.moved(shared, channel);
                }
                return Ok(());
            }
            // Subscription confirmations (the commands' own replies) and anything newer.
            _ => return Ok(()),
        }
        let mut data = push.data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(message))) =
            (data.next(), data.next())
        else {
            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        match shared.names.parse(&channel) {
            Some(Target::Stream(stream)) => {
                if let (Some(raced), StreamKey::Campaign(campaign)) = (raced, &stream) {
                    raced.insert(campaign.clone());
                }
                deliver(shared, &stream, Bytes::from(message));
            }
            Some(Target::Revoke) => match decode_revocation(&message) {
                Some(revocation) => {
                    shared.stats.revocations.fetch_add(1, Ordering::Relaxed);
                    shared.each_hub(|hub| hub.revoke(&revocation));
                }
                None => {
                    shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("redis broker: unreadable revocation message; ignored");
                }
            },
            None => {
                shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// Checks a received message's events (one decode each, no re-encoding) and hands the same
/// bytes to every attached hub, in order, each at its offset (the first at the message's,
/// then one more per line: see `names.rs`).
fn deliver(shared: &Shared, stream: &StreamKey, message: Bytes) {
    let Some((position, start)) = parse_message(&message) else {
        reject(stream, "not framed as <epoch>:<offset>\\n<json>", shared);
        return;
    };
    let body = message.slice(start..);
    let mut offset = Some(position.offset);
    for json in events_of(&body) {
        let Some(at) = offset else {
            reject(stream, "offsets past 2^64", shared);
            return;
        };
        offset = at.checked_add(1);
        match validate_relayed(stream, body.slice_ref(json), &shared.rules) {
            Ok(event) => {
                shared.stats.received.fetch_add(1, Ordering::Relaxed);
                crate::metrics::record::redis_relayed();
                shared.each_hub(|hub| {
                    // Refused by a hub that knows the campaign finished (Redis refuses such
                    // publishes first, so this is a stray from before that state), or that is
                    // past this offset (a stray duplicate): ignored.
                    let _ = hub.deliver_in(stream, event.clone(), &position.epoch, at);
                });
            }
            Err(error) => reject(stream, &error.to_string(), shared),
        }
    }
}

/// Counts and logs a message (or one event of it) that is not valid: dropped.
fn reject(stream: &StreamKey, error: &str, shared: &Shared) {
    shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
    // The stream is named by kind only: an account id is not for the logs.
    tracing::warn!(
        stream = match stream {
            StreamKey::Inbox(_) => "inbox",
            StreamKey::Campaign(_) => "campaign",
        },
        error,
        "redis broker: a message is not a valid event; dropped"
    );
}

impl Shared {
    /// Changes the confirmed subscriptions ([`Interest::live`]) under the interest's lock,
    /// then publishes their count and wakes whoever waits for a stream's readiness.
    fn update_live<R>(&self, change: impl FnOnce(&mut Interest) -> R) -> R {
        let (result, count) = {
            let mut interest = lock(&self.interest);
            let result = change(&mut interest);
            (result, interest.live.len())
        };
        self.stats.subscribed.store(count, Ordering::Relaxed);
        self.progress
            .send_modify(|p| p.confirmed = p.confirmed.wrapping_add(1));
        result
    }

    /// Events published while `why` lasts are not delivered on this node: counted, logged,
    /// and every attached hub told (its opted-in connections holding a position close with
    /// 1001, to resume from the history).
    fn gap(&self, why: &str) {
        self.stats.gaps.fetch_add(1, Ordering::Relaxed);
        crate::metrics::record::redis_gap();
        self.each_hub(HubDelivery::report_gap);
        tracing::warn!("redis broker: {why} (a gap)");
    }

    /// Calls `f` for every attached hub. (The list's read lock is held meanwhile; that is
    /// safe because a hub never calls back into the broker's list while delivering, and
    /// `attach` is not called under a hub's lock.)
    fn each_hub(&self, mut f: impl FnMut(&HubDelivery)) {
        let hubs = self
            .hubs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for hub in hubs.iter() {
            f(hub);
        }
    }
}

/// Groups resumes asking for the same stream from the same position, in arrival order: each
/// group is its first resume and the others.
fn group(resumes: impl Iterator<Item = Resume>) -> Vec<(Resume, Vec<Resume>)> {
    super::group_in_order(resumes, |resume| {
        (resume.stream.clone(), resume.request.clone())
    })
    .into_iter()
    .filter_map(|group| {
        let mut group = group.into_iter();
        group.next().map(|first| (first, group.collect()))
    })
    .collect()
}

/// Fails every connection of `batch` (1011: its client comes back later).
fn fail_all(shared: &Shared, batch: Vec<Resume>, why: &str) {
    shared
        .stats
        .resume_errors
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    tracing::warn!(
        connections = batch.len(),
        why,
        "redis broker: could not read the history for resuming connections; they close (1011)"
    );
    for resume in batch {
        resume.start.fail();
    }
}

/// The recovery decision, the replay and the late-joiner event from a [`RESUME_READ`]
/// answer; `None` when any of it is unreadable (the connection then fails: a replay with a
/// hole would be a silent gap).
fn decision(
    shared: &Shared,
    resume: &Resume,
    reply: Vec<Vec<u8>>,
) -> Option<(Recovery, Vec<EncodedEvent>, Option<EncodedEvent>)> {
    fn number(bytes: &[u8]) -> Option<u64> {
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }
    let mut fields = reply.into_iter();
    let epoch = Epoch::new(std::str::from_utf8(&fields.next()?).ok()?).ok()?;
    let latest = number(&fields.next()?)?;
    let oldest = fields.next()?;
    let last = fields.next()?;
    let done = fields.next()? == b"1";
    // Everything up to the oldest entry still held (within the age bound) may be lost; with
    // nothing held, everything up to the latest.
    let lost_through = if oldest.is_empty() {
        latest
    } else {
        number(&oldest)?.checked_sub(1)?
    };
    let recovery = decide(&resume.request, &epoch, latest, lost_through);
    let mut replay = Vec::new();
    if let Some(after) = recovery.replay_after {
        let mut previous = after;
        while let Some(offset) = fields.next() {
            let offset = number(&offset)?;
            let json = Bytes::from(fields.next()?);
            if offset <= previous || offset > latest {
                return None;
            }
            previous = offset;
            let event = validate_relayed(&resume.stream, json, &shared.rules).ok()?;
            replay.push(event.with_offset(offset));
        }
    }
    let ends = replay
        .last()
        .is_some_and(|event: &EncodedEvent| event.class() == EventClass::Terminal);
    let wants_first = recovery.replay_after.is_none() || (done && !ends);
    let first = match (wants_first, last.is_empty()) {
        (true, false) => {
            let last = Bytes::from(last);
            let (position, start) = parse_message(&last)?;
            if position.epoch == epoch && position.offset <= latest {
                let event =
                    validate_relayed(&resume.stream, last.slice(start..), &shared.rules).ok()?;
                Some(event.with_offset(position.offset))
            } else {
                // Kept from an epoch whose history is gone: its offset means nothing now.
                None
            }
        }
        _ => None,
    };
    Some((recovery, replay, first))
}
