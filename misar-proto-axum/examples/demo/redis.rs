//! `--redis` / `--redis-cluster`: a hub on the Redis broker (shared with `bench_server`, so the
//! benchmark runs what the demo runs).

use misar_proto_tokio::hub::{Hub, HubConfig};

/// A hub whose events go through the Redis at `url`.
#[cfg(feature = "redis")]
pub async fn redis_hub(url: &str, cluster: bool, config: HubConfig) -> Result<Hub, String> {
    use misar_proto_tokio::hub::redis::{RedisBroker, RedisConfig};
    let flag = if cluster {
        "--redis-cluster"
    } else {
        "--redis"
    };
    // Never the URL in the message: it may hold a password.
    let broker = RedisBroker::connect(
        url,
        RedisConfig {
            cluster,
            ..RedisConfig::default()
        },
    )
    .await
    .map_err(|e| {
        let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
        format!("cannot use Redis ({flag}): {e}{cause}")
    })?;
    tracing::info!(cluster, "fanning out through Redis");
    Ok(Hub::with_broker(config, broker))
}

/// Without the `redis` feature, `--redis` is refused with a hint.
#[cfg(not(feature = "redis"))]
pub async fn redis_hub(_url: &str, _cluster: bool, _config: HubConfig) -> Result<Hub, String> {
    Err(
        "--redis and --redis-cluster need the demo built with `--features redis` \
         (cargo run -p misar-proto-axum --features redis --example demo -- ...)"
            .to_owned(),
    )
}
