//! A node of the Redis tests: a hub on its own `RedisBroker`, served over real WebSockets on
//! loopback. Shared by `redis.rs` and `redis_resume.rs` (both declare `support` and
//! `redis_util` beside it).
// Each test crate uses a different part.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use misar_proto::backoff::BackoffConfig;
use misar_proto::server::ServerConfig;
use misar_proto_tokio::hub::redis::{RedisBroker, RedisConfig};
use misar_proto_tokio::hub::{Hub, HubConfig};
use misar_proto_tokio::server::DriverConfig;

use crate::redis_util::RedisServer;
use crate::support::TestServer;

pub struct Node {
    pub hub: Hub,
    pub broker: Arc<RedisBroker>,
    pub server: TestServer,
}

/// Test-sized backoff, so recoveries take milliseconds.
pub fn config() -> RedisConfig {
    RedisConfig {
        backoff: BackoffConfig {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
        },
        ..RedisConfig::default()
    }
}

/// A node on `redis` with `config`.
pub async fn node_with(redis: &RedisServer, config: RedisConfig) -> Node {
    let broker = RedisBroker::connect(&redis.url(), config).await.unwrap();
    let hub = Hub::with_broker(HubConfig::default(), broker.clone());
    let server = TestServer::start(
        hub.clone(),
        ServerConfig::default(),
        DriverConfig::default(),
    )
    .await;
    Node {
        hub,
        broker,
        server,
    }
}

/// A node on `redis` with [`config`].
pub async fn node(redis: &RedisServer) -> Node {
    node_with(redis, config()).await
}
