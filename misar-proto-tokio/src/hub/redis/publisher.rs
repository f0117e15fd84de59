//! The publishing side: one connection shared by every publish of the node, re-established
//! on demand after a failure, with backoff between attempts so a Redis that is down costs a
//! publish one fast error, not a connection attempt each.
//!
//! Events are **pipelined and batched**: every publish hands its event to one batching task,
//! which takes whatever has queued meanwhile (up to [`BATCH_EVENTS`]), groups it by stream,
//! and sends one script call per stream ([`EVENT_PUBLISH`], by its SHA: `EVALSHA`), with up
//! to [`IN_FLIGHT`] calls outstanding. An idle node sends each event at once (a batch of one);
//! a busy one pays one script call, one offset increment and one trim per batch instead of per
//! event. A stream's events keep their order: one stream's calls go over one connection to
//! one Redis (on a cluster: its slot's master), which runs them in the order sent.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use ::redis::{RedisError, Script};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use misar_proto::backoff::Backoff;
use misar_proto::close::Pace;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::connection::{Connection, Upstream};
use super::names::Names;
use super::{RedisBrokerError, RedisConfig};
use crate::hub::{StreamKey, lock};

/// What a revocation sends: `PUBLISH channel message` (`SPUBLISH` on a cluster).
pub(super) struct Op<'a> {
    pub(super) channel: &'a [u8],
    pub(super) message: &'a [u8],
}

/// An event to publish on its stream's channel, numbered by Redis.
struct Job {
    stream: StreamKey,
    /// The event's JSON.
    json: Bytes,
    /// 0: ordinary, 1: a `progress` (cached for late joiners), 2: terminal (cached, and the
    /// campaign is done).
    mode: u8,
    reply: oneshot::Sender<Result<i64, RedisBrokerError>>,
}

/// Events taken from the queue at once (and so at most per script call).
pub(super) const BATCH_EVENTS: usize = 64;

/// Script calls outstanding at once. While they are, publishes queue and go in the next
/// batch; more would only split batches without making Redis (one thread) go faster.
pub(super) const IN_FLIGHT: usize = 4;

/// Publishes waiting for the batching task at most; a publisher beyond waits its turn.
const QUEUE: usize = 8192;

/// The publish of a batch of one stream's events (Redis runs it atomically). For a campaign
/// (4 keys) nothing is accepted when the `done` key says it finished (§2.13), and of the
/// batch, events up to and including the first terminal one. Then:
///
/// 1. the stream's epoch: the `meta` hash's `e`; when there is none (a fresh stream, or a
///    history that was flushed, expired or lost with a Redis restart) the caller's fresh
///    epoch, with the offset at 0 and whatever history is left deleted, so offsets of two
///    epochs are never compared;
/// 2. the offsets: `HINCRBY meta o <accepted>` (per stream, contiguous, strictly increasing
///    within the epoch), the batch's events numbered in order;
/// 3. the history: `XADD history <offset>-0 t <ms> d <json>` per event (`t` from Redis's
///    clock for the age bound), then one exact `XTRIM MAXLEN max_events` and `PEXPIRE` by
///    the age bound;
/// 4. a campaign's latest `progress` / terminal event of the batch: `SET last <message>`
///    (and `done`);
/// 5. one `PUBLISH channel <epoch>:<first offset>\n<json>[\n<json>…]` for the batch (the
///    events in order, one per line; see `names.rs`), `SPUBLISH` on a cluster: every key and
///    the channel share the stream's hash tag, so they are in one slot.
///
/// Answers `{receivers, accepted}`: the nodes subscribed to the channel, the events accepted
/// (the first ones of the batch). KEYS: meta, history[, last, done]. ARGV: new epoch, max
/// events, max age ms, meta ttl ms, channel, cache ttl ms, publish command, then per event
/// its mode and its JSON.
const EVENT_PUBLISH: &str = r"
-- Redis 6: writes after TIME need effects replication (the default from Redis 7 on).
pcall(redis.replicate_commands)
local campaign = #KEYS == 4
local n = (#ARGV - 7) / 2
if n < 1 or (campaign and redis.call('EXISTS', KEYS[4]) == 1) then return {0, 0} end
local accepted = n
if campaign then
  for i = 1, n do
    if ARGV[6 + 2 * i] == '2' then accepted = i break end
  end
end
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', '0')
end
local last = redis.call('HINCRBY', KEYS[1], 'o', accepted)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local ms = nil
if ARGV[2] ~= '0' then
  local now = redis.call('TIME')
  ms = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end
local cached = nil
local jsons = {}
for i = 1, accepted do
  local offset = string.format('%d', last - accepted + i)
  local json = ARGV[7 + 2 * i]
  jsons[i] = json
  if ms then redis.call('XADD', KEYS[2], offset .. '-0', 't', ms, 'd', json) end
  if campaign and ARGV[6 + 2 * i] ~= '0' then cached = epoch .. ':' .. offset .. '\n' .. json end
end
local first = string.format('%d', last - accepted + 1)
local receivers = redis.call(ARGV[7], ARGV[5], epoch .. ':' .. first .. '\n' .. table.concat(jsons, '\n'))
if ms then
  redis.call('XTRIM', KEYS[2], 'MAXLEN', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if cached then redis.call('SET', KEYS[3], cached, 'PX', ARGV[6]) end
if campaign and ARGV[6 + 2 * accepted] == '2' then redis.call('SET', KEYS[4], '1', 'PX', ARGV[6]) end
return {receivers, accepted}
";

/// A job's mode as the script reads it.
const MODES: [&str; 3] = ["0", "1", "2"];

static EVENT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(EVENT_PUBLISH));

/// What a publish answers when the campaign is finished.
pub(super) const FINISHED: i64 = -1;

/// Milliseconds for a script argument (at least 1: `PX 0` is an error).
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The publishing side: the batching task's queue, and the connection it shares with
/// revocations.
pub(super) struct Publisher {
    link: Arc<Link>,
    jobs: mpsc::Sender<Job>,
    task: tokio::task::AbortHandle,
}

/// The current connection, re-established on demand.
struct Link {
    upstream: Arc<Upstream>,
    config: RedisConfig,
    /// The current connection and its number (so a failure only drops the connection it
    /// happened on, not a newer one).
    current: Mutex<Option<(u64, Connection)>>,
    /// Held while connecting: one attempt at a time.
    reconnect: tokio::sync::Mutex<Reconnect>,
}

struct Reconnect {
    backoff: Backoff,
    /// No new attempt before this instant (after a failed one).
    not_before: Option<Instant>,
    next_id: u64,
}

impl Publisher {
    /// Starts the batching task (it ends when the publisher is dropped).
    pub(super) fn new(
        upstream: Arc<Upstream>,
        names: Arc<Names>,
        config: RedisConfig,
        backoff: Backoff,
    ) -> Self {
        let link = Arc::new(Link {
            upstream,
            config,
            current: Mutex::new(None),
            reconnect: tokio::sync::Mutex::new(Reconnect {
                backoff,
                not_before: None,
                next_id: 0,
            }),
        });
        let (jobs, queue) = mpsc::channel(QUEUE);
        let task = tokio::spawn(batch(Arc::clone(&link), names, queue)).abort_handle();
        Self { link, jobs, task }
    }

    /// Publishes an event of `stream` (`mode`: see [`Job`]); returns how many Redis clients
    /// (nodes) were subscribed to its channel, or [`FINISHED`] when a campaign refused it.
    pub(super) async fn publish(
        &self,
        stream: StreamKey,
        json: Bytes,
        mode: u8,
    ) -> Result<i64, RedisBrokerError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            stream,
            json,
            mode,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| RedisBrokerError::ConnectionLost)?;
        answer
            .await
            .unwrap_or(Err(RedisBrokerError::ConnectionLost))
    }

    /// Sends a revocation; returns how many nodes received it.
    pub(super) async fn send(&self, op: Op<'_>) -> Result<i64, RedisBrokerError> {
        let (id, mut connection) = self.link.connection().await?;
        let result = ::redis::cmd(connection.publish_command())
            .arg(op.channel)
            .arg(op.message)
            .query_async::<i64>(&mut connection)
            .await;
        result.map_err(|error| self.link.failed(id, error))
    }

    /// Connects now if not connected (for a startup that should fail when Redis is away).
    pub(super) async fn check(&self) -> Result<(), RedisBrokerError> {
        self.link.connection().await.map(|_| ())
    }

    /// Lifts the backoff (the subscriber side just connected, so Redis answers again): the
    /// next publish tries at once instead of failing until its own delay has passed.
    pub(super) fn redis_is_back(&self) {
        // A publish holding the lock is connecting right now: nothing to lift.
        if let Ok(mut reconnect) = self.link.reconnect.try_lock() {
            reconnect.backoff.reset();
            reconnect.not_before = None;
        }
    }

    /// Drops the current connection (the subscriber side just lost Redis, so this one is most
    /// likely dead too): the next publish connects afresh instead of failing on it first.
    pub(super) fn redis_is_gone(&self) {
        *lock(&self.link.current) = None;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Link {
    /// The current connection, or a new one if there is none and the backoff allows an
    /// attempt now.
    async fn connection(&self) -> Result<(u64, Connection), RedisBrokerError> {
        if let Some(current) = lock(&self.current).clone() {
            return Ok(current);
        }
        let mut reconnect = self.reconnect.lock().await;
        // Someone else may have connected while this publish waited for the lock.
        if let Some(current) = lock(&self.current).clone() {
            return Ok(current);
        }
        let now = Instant::now();
        if let Some(not_before) = reconnect.not_before {
            if now < not_before {
                return Err(RedisBrokerError::Disconnected {
                    retry_in: not_before.saturating_duration_since(now),
                });
            }
        }
        let attempt = self.upstream.connect(&self.config, None).await;
        match attempt {
            Ok(connection) => {
                reconnect.backoff.reset();
                reconnect.not_before = None;
                let id = reconnect.next_id;
                reconnect.next_id = id.wrapping_add(1);
                *lock(&self.current) = Some((id, connection.clone()));
                Ok((id, connection))
            }
            Err(error) => {
                let delay = reconnect.backoff.next_delay(Pace::Normal);
                reconnect.not_before = now.checked_add(delay);
                Err(error)
            }
        }
    }

    /// A command on connection `id` failed: drops the connection when the error broke it.
    fn failed(&self, id: u64, error: RedisError) -> RedisBrokerError {
        // On a cluster the connection routes around a master that is down by itself: only a
        // failure of the whole connection would need a new one, and that shows as the same
        // errors, so it is dropped too (reconnecting is cheap next to the outage).
        if breaks_connection(&error) {
            let mut current = lock(&self.current);
            if current.as_ref().is_some_and(|(current, _)| *current == id) {
                *current = None;
            }
        }
        RedisBrokerError::from_command(error)
    }
}

/// The batching task: takes what queued, one script call per stream, [`IN_FLIGHT`] at most.
async fn batch(link: Arc<Link>, names: Arc<Names>, mut queue: mpsc::Receiver<Job>) {
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            job = queue.recv(), if open && in_flight.len() < IN_FLIGHT => {
                let Some(job) = job else {
                    open = false;
                    continue;
                };
                let mut jobs = vec![job];
                while jobs.len() < BATCH_EVENTS {
                    match queue.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let (id, connection) = match link.connection().await {
                    Ok(connection) => connection,
                    Err(error) => {
                        for job in jobs {
                            let _ = job.reply.send(Err(error.clone()));
                        }
                        continue;
                    }
                };
                for group in super::group_in_order(jobs, |job| job.stream.clone()) {
                    in_flight.push(call(
                        Arc::clone(&link),
                        Arc::clone(&names),
                        id,
                        connection.clone(),
                        group,
                    ));
                }
            }
        }
    }
}

/// One script call for one stream's `jobs`; answers each of them.
async fn call(
    link: Arc<Link>,
    names: Arc<Names>,
    id: u64,
    mut connection: Connection,
    jobs: Vec<Job>,
) {
    let Some(first) = jobs.first() else { return };
    let config = &link.config;
    let stream = &first.stream;
    let mut invocation = EVENT_SCRIPT.key(names.meta(stream));
    invocation.key(names.history(stream));
    if let StreamKey::Campaign(campaign) = stream {
        invocation
            .key(names.last(campaign))
            .key(names.done(campaign));
    }
    invocation
        .arg(crate::hub::draw_epoch().as_str())
        .arg(config.history.max_events)
        .arg(millis(config.history.max_age))
        .arg(millis(config.meta_ttl()))
        .arg(names.channel(stream))
        .arg(millis(config.cache_ttl))
        .arg(connection.publish_command());
    for job in &jobs {
        invocation
            .arg(MODES[usize::from(job.mode.min(2))])
            .arg(job.json.as_ref());
    }
    let answer: Result<(i64, i64), RedisError> = invocation.invoke_async(&mut connection).await;
    match answer {
        Ok((receivers, accepted)) => {
            for (index, job) in jobs.into_iter().enumerate() {
                let result = if (index as i64) < accepted {
                    receivers
                } else {
                    FINISHED
                };
                let _ = job.reply.send(Ok(result));
            }
        }
        Err(error) => {
            let error = link.failed(id, error);
            for job in jobs {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Whether an error means the connection is unusable (as opposed to Redis refusing one
/// command).
pub(super) fn breaks_connection(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}
