//! # misar-proto-axum
//!
//! The axum adapter of [`misar_proto`]: a [`Router`](axum::Router) serving the MisarMail
//! real-time channels (`{prefix}/inbox`, `{prefix}/campaigns/{id}`), to `merge` or `nest` into
//! your app.
//!
//! - **Before the upgrade** the core's handshake runs ([`misar_proto::handshake`]): routing,
//!   `Origin`, credentials, then your [`Authorizer`] (key → account, account × campaign →
//!   owned). A refusal is an HTTP response (403, 404, 429, 503...) with no upgrade and no task
//!   spawned, or, in the `CloseAfterUpgrade` style, an upgrade whose only message is close
//!   4401/4403. A failing hook fails closed: 503.
//! - **Accepted** connections take a slot in the [`Hub`](misar_proto_tokio::hub::Hub)
//!   (per-account and total limits: 429, or 503 with `Retry-After`) and run under
//!   [`serve_connection`](misar_proto_tokio::server::serve_connection) with small WebSocket
//!   buffers ([`WsBuffers`]).
//! - **Before the request head** ([`serve`]): `axum::serve` with §2.14's bounds — a
//!   connection that has not sent a complete request head within `handshake_timeout` (10 s,
//!   however slowly it drips), or a kept-alive one idle that long, is closed; heads are bounded
//!   (16 KiB); credential headers are marked sensitive before the app sees them.
//! - **Around the hooks** (§2.14): each call runs under `hook_timeout` (5 s; a hang is a
//!   failed hook, 503), and at most `max_pending_handshakes` (1,024) requests wait on them at
//!   once (more get 503 with `Retry-After`, no hook called).
//! - **Credentials** in `Authorization: Bearer`, `?token=`, or the `misar.bearer.<key>`
//!   subprotocol beside `misar.v1` (§2.12), which the 101 echoes — never the key.
//! - **Shutdown**: [`ShutdownHandle`] tracks upgraded connections (axum's graceful shutdown
//!   does not), closes them with 1001 and drops what is left after the grace period.
//! - **Logs** go through `tracing` and never contain a key, at any level: paths are logged
//!   without their query, keys only in their redacted form, and axum's WebSocket extractor
//!   (whose `Debug` prints the offered subprotocols) never sees the subprotocol header.
//!   Each served connection runs in a `misar_connection` span (`account`, `channel` kind).
//! - **Observability**: [`MisarWsBuilder::observer`] takes a [`ConnectionObserver`] told
//!   when a connection opens and closes; with the cargo feature `metrics` the router counts
//!   `misar_handshakes_total{outcome}` and `misar-proto-tokio` records the other families
//!   (listed in [`misar_proto_tokio::metrics`]) through the `metrics` facade. The library
//!   never installs a recorder: install one (e.g. `metrics-exporter-prometheus`) in your
//!   application, then call [`misar_proto_tokio::metrics::describe`].
//!
//! ## Embed in your axum app
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::{Router, routing::get};
//! use misar_proto::auth::{AccountId, ApiKey};
//! use misar_proto::route::CampaignId;
//! use misar_proto_axum::{Authorizer, AuthorizerError, MisarWs};
//! use misar_proto_tokio::hub::{Hub, HubConfig};
//!
//! /// Your key and ownership checks (e.g. database lookups).
//! struct MyAuth;
//!
//! impl Authorizer for MyAuth {
//!     async fn authenticate(&self, key: &ApiKey) -> Result<Option<AccountId>, AuthorizerError> {
//!         // Constant-time comparison (or look up a hash of `key.expose()`).
//!         Ok(key.ct_eq_str("msk_live_example").then(|| AccountId::from("acct-42")))
//!     }
//!
//!     async fn owns_campaign(
//!         &self,
//!         account: &AccountId,
//!         campaign: &CampaignId,
//!     ) -> Result<bool, AuthorizerError> {
//!         Ok(account.as_str() == "acct-42" && campaign.as_str().starts_with("c-"))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let hub = Hub::new(HubConfig::default());
//!     let misar = MisarWs::builder(hub.clone(), MyAuth)
//!         .prefix("/mail/ws")
//!         .ping_interval(Duration::from_secs(30))
//!         .hook_timeout(Duration::from_secs(5)) // the defaults of §2.14, spelled out
//!         .max_pending_handshakes(1024)
//!         .build();
//!     let shutdown = misar.shutdown_handle();
//!
//!     let app = Router::new()
//!         .route("/health", get(|| async { "ok" }))
//!         .merge(misar.router());
//!
//!     // Elsewhere in your app: publish events; every subscriber of the stream gets them.
//!     // hub.publish_inbox(&AccountId::from("acct-42"), &event).await
//!
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     // Not `axum::serve`: this one closes connections that send no request head in time.
//!     misar_proto_axum::serve(listener, app)
//!         .handshake_timeout(Duration::from_secs(10))
//!         // On Ctrl-C: close every WebSocket with 1001, wait for them (bounded), then stop.
//!         .with_graceful_shutdown(shutdown.on_signal(async {
//!             let _ = tokio::signal::ctrl_c().await;
//!         }))
//!         .await
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod authorizer;
mod bounds;
mod buffers;
mod metrics;
mod observer;
mod reject;
mod serve;
mod service;
mod shutdown;
mod transport;
mod upgrade;

pub use authorizer::{Authorizer, AuthorizerError, MemoryAuthorizer};
pub use bounds::{DEFAULT_HOOK_TIMEOUT, DEFAULT_MAX_PENDING_HANDSHAKES};
pub use buffers::WsBuffers;
pub use observer::{ConnectionInfo, ConnectionObserver};
pub use serve::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_HEAD_BYTES, Serve, serve};
pub use service::{MisarWs, MisarWsBuilder};
pub use shutdown::{ShutdownHandle, ShutdownReport};
pub use transport::{AxumTransport, TransportError};

// The README's Rust snippets are compiled (not run) as doc tests of this crate, which depends
// on everything they use.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
