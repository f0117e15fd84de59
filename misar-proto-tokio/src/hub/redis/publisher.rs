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
    /// `PUBLISH channel message`.
    Publish {
        channel: &'a [u8],
        message: &'a [u8],
    },
    /// A campaign event, as one Lua script (Redis runs it atomically): refused (`-1`) when
    /// the `done` key says the campaign finished; else, for a `progress` or terminal event,
    /// `SET last message PX ttl` (and, for a terminal one, `SET done 1 PX ttl`), then
    /// `PUBLISH channel message`. The `last` key thus always holds the last message published
    /// on the channel, which is what lets a late joiner's fetch be ordered against the channel
    /// (see `subscriber`), and nothing is ever published after a terminal event (§2.13).
    Campaign {
        last: &'a [u8],
        done: &'a [u8],
        ttl: Duration,
        channel: &'a [u8],
        message: &'a [u8],
        /// 0: ordinary (publish only), 1: cache it, 2: cache it and mark the campaign done.
        mode: u8,
    },
}

/// The script of [`Op::Campaign`].
const CAMPAIGN_PUBLISH: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if ARGV[3] ~= '0' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
if ARGV[3] == '2' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
return redis.call('PUBLISH', ARGV[4], ARGV[1])
";

/// What [`Op::Campaign`] answers when the campaign is finished.
pub(super) const FINISHED: i64 = -1;

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
            Op::Campaign {
                last,
                done,
                ttl,
                channel,
                message,
                mode,
            } => {
                let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                ::redis::cmd("EVAL")
                    .arg(CAMPAIGN_PUBLISH)
                    .arg(2)
                    .arg(last)
                    .arg(done)
                    .arg(message)
                    .arg(millis)
                    .arg(mode.to_string())
                    .arg(channel)
                    .query_async::<i64>(&mut connection)
                    .await
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
