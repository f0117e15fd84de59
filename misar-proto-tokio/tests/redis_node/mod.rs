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

use std::net::SocketAddr;

use misar_proto::resume::ResumeFrame;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::redis_util::RedisServer;
use crate::support::{Client, TestServer, next_text};

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
    node_on(&redis.url(), config).await
}

/// A node on the Redis (or, with `config.cluster`, the Redis Cluster seeds) at `url`.
pub async fn node_on(url: &str, config: RedisConfig) -> Node {
    let broker = RedisBroker::connect(url, config).await.unwrap();
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

/// Connects as `account`, opted in with `Misar-Resume: resume`.
pub async fn connect_resume(addr: SocketAddr, path: &str, account: &str, resume: &str) -> Client {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        format!("Bearer msk_{account}").parse().unwrap(),
    );
    headers.insert("misar-resume", resume.parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    ws
}

/// The first frame of an opted-in connection.
pub async fn resume_frame(client: &mut Client) -> ResumeFrame {
    let text = next_text(client).await;
    ResumeFrame::decode(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// An opted-in event: its §2.4 text (the `,"offset":N` field removed) and its offset.
pub fn split_offset(text: &str) -> (String, u64) {
    let at = text
        .rfind(",\"offset\":")
        .unwrap_or_else(|| panic!("no offset in {text}"));
    let number = &text[at + 10..text.len() - 1];
    assert!(text.ends_with('}'), "{text}");
    (format!("{}}}", &text[..at]), number.parse().unwrap())
}

/// Reads `n` opted-in events.
pub async fn events(client: &mut Client, n: usize) -> Vec<(String, u64)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(split_offset(&next_text(client).await));
    }
    out
}

/// A node on the Redis Cluster at `urls` (comma-separated seeds).
pub async fn cluster_node(urls: &str, config: RedisConfig) -> Node {
    node_on(
        urls,
        RedisConfig {
            cluster: true,
            ..config
        },
    )
    .await
}

/// Publishes `event` to `account`'s inbox on `hub`, again every 20 ms, until Redis says a
/// node was subscribed to the stream (`receivers == Some(1)`); whether that happened within
/// `limit`. (Errors while a master is away count as "not yet".)
pub async fn publish_until_received(
    hub: &Hub,
    account: &str,
    event: &misar_proto::event::InboxEvent,
    limit: Duration,
) -> bool {
    let account = misar_proto::auth::AccountId::new(account);
    tokio::time::timeout(limit, async {
        loop {
            if let Ok(report) = hub.publish_inbox(&account, event).await {
                if report.receivers == Some(1) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}
