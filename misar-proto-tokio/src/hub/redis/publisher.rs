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
    /// `MULTI; SET key message PX ttl; PUBLISH channel message; EXEC`: the key always holds
    /// the last message published on the channel (Redis runs the two together), which is
    /// what lets a late joiner's fetch be ordered against the channel (see `subscriber`).
    CacheAndPublish {
        key: &'a [u8],
        ttl: Duration,
        channel: &'a [u8],
        message: &'a [u8],
    },
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

    /// Sends `op`; returns how many Redis clients (nodes) received the message.
    pub(super) async fn send(&self, op: Op<'_>) -> Result<u64, RedisBrokerError> {
        let (id, mut connection) = self.connection().await?;
        let result = match op {
            Op::Publish { channel, message } => {
                ::redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .query_async::<u64>(&mut connection)
                    .await
            }
            Op::CacheAndPublish {
                key,
                ttl,
                channel,
                message,
            } => {
                let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                ::redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(key)
                    .arg(message)
                    .arg("PX")
                    .arg(millis)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .query_async::<(u64,)>(&mut connection)
                    .await
                    .map(|(receivers,)| receivers)
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
