//! The publishing side: one multiplexed connection shared by every publish of the node,
//! re-established on demand after a failure, with backoff between attempts so a Redis that
//! is down costs a publish one fast error, not a connection attempt each.

use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError};
use misar_proto::backoff::Backoff;
use misar_proto::close::Pace;
use tokio::time::Instant;

use super::RedisBrokerError;
use crate::hub::lock;

/// What a publish sends.
pub(super) enum Op<'a> {
    /// `PUBLISH channel message` (revocations).
    Publish {
        channel: &'a [u8],
        message: &'a [u8],
    },
    /// An event, as one Lua script ([`EVENT_PUBLISH`]; Redis runs it atomically).
    Event(Event<'a>),
}

/// An event to publish on its stream's channel, numbered by Redis.
pub(super) struct Event<'a> {
    /// The stream's `meta` hash (epoch and latest offset).
    pub(super) meta: &'a [u8],
    /// The stream's history (a Redis Stream).
    pub(super) history: &'a [u8],
    /// A campaign's `last` and `done` keys (`None` for an inbox).
    pub(super) campaign: Option<(&'a [u8], &'a [u8])>,
    pub(super) channel: &'a [u8],
    /// The event's JSON.
    pub(super) json: &'a [u8],
    /// The epoch to create if the stream has none (fresh, or its history is gone).
    pub(super) new_epoch: &'a str,
    /// Entries the history keeps (exact `MAXLEN`; 0: no history).
    pub(super) max_events: usize,
    /// How long the history outlives the stream's last publish.
    pub(super) max_age: Duration,
    /// How long the epoch and offset outlive the stream's last publish.
    pub(super) meta_ttl: Duration,
    /// How long a campaign's `last` and `done` keys live.
    pub(super) cache_ttl: Duration,
    /// 0: ordinary (publish only), 1: cache it, 2: cache it and mark the campaign done.
    pub(super) mode: u8,
}

/// The publish of [`Op::Event`]. For a campaign (4 keys), refused (`-1`) when the `done` key
/// says it finished (§2.13). Then, in one atomic step:
///
/// 1. the stream's epoch: the `meta` hash's `e`; when there is none (a fresh stream, or a
///    history that was flushed, expired or lost with a Redis restart) the caller's fresh
///    epoch, with the offset at 0 and whatever history is left deleted, so offsets of two
///    epochs are never compared;
/// 2. the offset: `HINCRBY meta o 1` (per stream, strictly increasing within the epoch);
/// 3. the history: `XADD history MAXLEN max_events <offset>-0 t <ms> d <json>` (exact trim,
///    `t` from Redis's clock for the age bound), `PEXPIRE` by the age bound;
/// 4. a campaign's `progress` / terminal event: `SET last <message>` (and `done`), as before;
/// 5. `PUBLISH channel <epoch>:<offset>\n<json>`.
///
/// Answers the number of receivers (nodes) or -1. KEYS: meta, history[, last, done]. ARGV:
/// json, new epoch, max events, max age ms, meta ttl ms, channel, mode, cache ttl ms.
const EVENT_PUBLISH: &str = r"
-- Redis 6: writes after TIME need effects replication (the default from Redis 7 on).
pcall(redis.replicate_commands)
if #KEYS == 4 and redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', '0')
end
local offset = string.format('%d', redis.call('HINCRBY', KEYS[1], 'o', 1))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if ARGV[3] ~= '0' then
  local now = redis.call('TIME')
  local ms = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 't', ms, 'd', ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
local message = epoch .. ':' .. offset .. '\n' .. ARGV[1]
if #KEYS == 4 then
  if ARGV[7] ~= '0' then redis.call('SET', KEYS[3], message, 'PX', ARGV[8]) end
  if ARGV[7] == '2' then redis.call('SET', KEYS[4], '1', 'PX', ARGV[8]) end
end
return redis.call('PUBLISH', ARGV[6], message)
";

/// What [`Op::Event`] answers when the campaign is finished.
pub(super) const FINISHED: i64 = -1;

/// Milliseconds for a script argument (at least 1: `PX 0` is an error).
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

pub(super) struct Publisher {
    client: Client,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    /// The current connection and its number (so a failure only drops the connection it
    /// happened on, not a newer one).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
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
    pub(super) fn new(
        client: Client,
        connect_timeout: Duration,
        command_timeout: Duration,
        backoff: Backoff,
    ) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout));
        Self {
            client,
            config,
            connect_timeout,
            current: Mutex::new(None),
            reconnect: tokio::sync::Mutex::new(Reconnect {
                backoff,
                not_before: None,
                next_id: 0,
            }),
        }
    }

    /// Sends `op`; returns how many Redis clients (nodes) received the message, or
    /// [`FINISHED`] when a campaign publish was refused.
    pub(super) async fn send(&self, op: Op<'_>) -> Result<i64, RedisBrokerError> {
        let (id, mut connection) = self.connection().await?;
        let result = match op {
            Op::Publish { channel, message } => {
                ::redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .query_async::<i64>(&mut connection)
                    .await
            }
            Op::Event(event) => {
                let mut command = ::redis::cmd("EVAL");
                command
                    .arg(EVENT_PUBLISH)
                    .arg(if event.campaign.is_some() { 4 } else { 2 })
                    .arg(event.meta)
                    .arg(event.history);
                if let Some((last, done)) = event.campaign {
                    command.arg(last).arg(done);
                }
                command
                    .arg(event.json)
                    .arg(event.new_epoch)
                    .arg(event.max_events)
                    .arg(millis(event.max_age))
                    .arg(millis(event.meta_ttl))
                    .arg(event.channel)
                    .arg(event.mode.to_string())
                    .arg(millis(event.cache_ttl));
                command.query_async::<i64>(&mut connection).await
            }
        };
        result.map_err(|error| {
            if breaks_connection(&error) {
                self.forget(id);
            }
            RedisBrokerError::from_command(error)
        })
    }

    /// Connects now if not connected (for a startup that should fail when Redis is away).
    pub(super) async fn check(&self) -> Result<(), RedisBrokerError> {
        self.connection().await.map(|_| ())
    }

    /// The current connection, or a new one if there is none and the backoff allows an
    /// attempt now.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisBrokerError> {
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
        let attempt = tokio::time::timeout(
            self.connect_timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&self.config),
        )
        .await;
        match attempt {
            Ok(Ok(connection)) => {
                reconnect.backoff.reset();
                reconnect.not_before = None;
                let id = reconnect.next_id;
                reconnect.next_id = id.wrapping_add(1);
                *lock(&self.current) = Some((id, connection.clone()));
                Ok((id, connection))
            }
            failed => {
                let delay = reconnect.backoff.next_delay(Pace::Normal);
                reconnect.not_before = now.checked_add(delay);
                Err(match failed {
                    Ok(Err(error)) => RedisBrokerError::Connect(error),
                    _ => RedisBrokerError::Timeout,
                })
            }
        }
    }

    /// Lifts the backoff (the subscriber side just connected, so Redis answers again): the
    /// next publish tries at once instead of failing until its own delay has passed.
    pub(super) fn redis_is_back(&self) {
        // A publish holding the lock is connecting right now: nothing to lift.
        if let Ok(mut reconnect) = self.reconnect.try_lock() {
            reconnect.backoff.reset();
            reconnect.not_before = None;
        }
    }

    /// Drops the current connection (the subscriber side just lost Redis, so this one is most
    /// likely dead too): the next publish connects afresh instead of failing on it first.
    pub(super) fn redis_is_gone(&self) {
        *lock(&self.current) = None;
    }

    /// Drops connection `id` if it is still the current one.
    fn forget(&self, id: u64) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|(current, _)| *current == id) {
            *current = None;
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
