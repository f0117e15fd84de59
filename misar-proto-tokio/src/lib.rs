//! # misar-proto-tokio
//!
//! The tokio binding of [`misar_proto`]:
//!
//! - [`client`]: a reconnecting client — `subscribe_inbox()` / `subscribe_campaign(id)` return a
//!   `Subscription`, a `Stream` of typed events (tokio-tungstenite underneath).
//! - [`server`]: `serve_connection`, the async driver of one `ServerSession` over any
//!   `Stream + Sink` of messages, with an adapter for tokio-tungstenite.
//! - [`hub`]: the in-process fan-out hub (encode once, bounded per-connection queues, last
//!   progress cache, revoke, shutdown) and the `Broker` seam for multi-node fan-out.
//! - [`metrics`]: the metric families recorded through the `metrics` facade (feature
//!   `metrics`; the application installs the recorder) and [`metrics::describe`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod hub;
pub mod metrics;
pub mod server;
