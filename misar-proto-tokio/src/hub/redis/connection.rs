//! Where the broker's connections come from: one Redis (a multiplexed RESP3 connection) or a
//! Redis Cluster (the `redis` crate's cluster connection, which routes every command by its
//! key's slot and reconnects to a master that comes back, resubscribing its sharded channels;
//! a slot that moves is the subscriber's to follow, see `subscriber.rs`). The rest of the
//! broker talks to a [`Connection`] either way; the few commands that differ (subscribing,
//! reading several keys) are methods here.

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    ProtocolVersion, RedisError, RedisFuture, RedisResult, Value,
};
use futures_util::future::join_all;

use super::inbound::BoundedSender;
use super::{RedisBrokerError, RedisConfig};

/// How to reach Redis.
pub(super) enum Upstream {
    /// One Redis (or one behind a proxy / Sentinel's current primary).
    Single(Client),
    /// A Redis Cluster, by its seed nodes.
    Cluster(Vec<ConnectionInfo>),
}

/// A connection to Redis: cheap to clone (both kinds are handles on a shared driver).
#[derive(Clone)]
pub(super) enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Upstream {
    /// `url` is one Redis URL, or with `cluster` a comma-separated list of seed nodes'.
    /// RESP3 is requested whatever the URLs say (pushes need it).
    pub(super) fn new(url: &str, cluster: bool) -> Result<Upstream, RedisBrokerError> {
        let resp3 = |url: &str| -> Result<ConnectionInfo, RedisBrokerError> {
            let info = url
                .trim()
                .into_connection_info()
                .map_err(RedisBrokerError::InvalidUrl)?;
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            Ok(info.set_redis_settings(settings))
        };
        if cluster {
            let nodes = url
                .split(',')
                .filter(|url| !url.trim().is_empty())
                .map(resp3)
                .collect::<Result<Vec<_>, _>>()?;
            if nodes.is_empty() {
                return Err(RedisBrokerError::InvalidUrl(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "no Redis Cluster node given",
                ))));
            }
            Ok(Upstream::Cluster(nodes))
        } else {
            let client = Client::open(resp3(url)?).map_err(RedisBrokerError::InvalidUrl)?;
            Ok(Upstream::Single(client))
        }
    }

    /// Connects, within the configured connect timeout; pushes (pub/sub messages, and the
    /// library's disconnection notices) go to `push`.
    pub(super) async fn connect(
        &self,
        config: &RedisConfig,
        push: Option<BoundedSender>,
    ) -> Result<Connection, RedisBrokerError> {
        let attempt = async {
            match self {
                Upstream::Single(client) => {
                    let mut settings = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(config.connect_timeout))
                        .set_response_timeout(Some(config.command_timeout));
                    if let Some(push) = push {
                        settings = settings.set_push_sender(push);
                    }
                    client
                        .get_multiplexed_async_connection_with_config(&settings)
                        .await
                        .map(Connection::Single)
                }
                Upstream::Cluster(nodes) => {
                    let mut builder = ClusterClientBuilder::new(nodes.clone())
                        .use_protocol(ProtocolVersion::RESP3)
                        .connection_timeout(config.connect_timeout)
                        .response_timeout(config.command_timeout)
                        // A command on a slot whose master is down fails after a short
                        // retry (a typed error), rather than being retried for long.
                        .retries(2)
                        .min_retry_wait(10)
                        .max_retry_wait(100);
                    if let Some(push) = push {
                        builder = builder.push_sender(push);
                    }
                    let client = builder.build()?;
                    client.get_async_connection().await.map(Connection::Cluster)
                }
            }
        };
        // A cluster connection first reads the slot map, then connects to each master.
        let limit = match self {
            Upstream::Single(_) => config.connect_timeout,
            Upstream::Cluster(_) => config.connect_timeout.saturating_mul(2),
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(RedisBrokerError::Connect(error)),
            Err(_) => Err(RedisBrokerError::Timeout),
        }
    }
}

impl Connection {
    /// Whether pub/sub here is sharded (`SSUBSCRIBE` / `SPUBLISH`, Redis Cluster).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// Subscribes to `channels`, each confirmed when its result is `Ok`. One `SUBSCRIBE` for
    /// them all on one Redis; on a cluster one `SSUBSCRIBE` per channel (a sharded
    /// subscription names channels of one slot only), all in flight at once, each to its
    /// slot's master, so a master that is down fails only its own channels.
    pub(super) async fn subscribe(&mut self, channels: &[Vec<u8>]) -> Vec<RedisResult<()>> {
        match self {
            Connection::Single(connection) => {
                let result = connection.subscribe(channels).await;
                channels.iter().map(|_| result.clone()).collect()
            }
            Connection::Cluster(connection) => {
                join_all(channels.iter().map(|channel| {
                    let mut connection = connection.clone();
                    async move { connection.ssubscribe(channel).await }
                }))
                .await
            }
        }
    }

    /// Unsubscribes from `channels` (see [`subscribe`](Self::subscribe)).
    pub(super) async fn unsubscribe(&mut self, channels: &[Vec<u8>]) -> RedisResult<()> {
        match self {
            Connection::Single(connection) => connection.unsubscribe(channels).await,
            Connection::Cluster(connection) => {
                for result in join_all(channels.iter().map(|channel| {
                    let mut connection = connection.clone();
                    async move { connection.sunsubscribe(channel).await }
                }))
                .await
                {
                    result?;
                }
                Ok(())
            }
        }
    }

    /// The values of `keys`: one `MGET` on one Redis; on a cluster one `GET` per key (keys
    /// of different slots cannot share a command), all in flight at once.
    pub(super) async fn get_many(&mut self, keys: &[Vec<u8>]) -> RedisResult<Vec<Option<Vec<u8>>>> {
        match self {
            Connection::Single(connection) => {
                ::redis::cmd("MGET").arg(keys).query_async(connection).await
            }
            Connection::Cluster(connection) => join_all(keys.iter().map(|key| {
                let mut connection = connection.clone();
                async move {
                    ::redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<Vec<u8>>>(&mut connection)
                        .await
                }
            }))
            .await
            .into_iter()
            .collect(),
        }
    }

    /// The pub/sub publish command: `PUBLISH`, or `SPUBLISH` on a cluster.
    pub(super) fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}
