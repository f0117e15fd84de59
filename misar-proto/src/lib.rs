//! # misar-proto
//!
//! The sans-IO core of the MisarMail real-time WebSocket protocol: pure state machines and
//! codecs, no sockets, no async, no clock reads. Adapters (the workspace's
//! `misar-proto-axum`) or your own transport drive it.
//!
//! | module | concern |
//! |---|---|
//! | [`route`] | path under the mount prefix → [`route::Channel`] |
//! | [`auth`] | [`auth::ApiKey`], credential extraction from a request head |
//! | [`handshake`] | the pre-upgrade decision as states to consume |
//! | [`event`] | the ten event types and their JSON codec |
//! | [`close`] | close codes, reasons, the client's retry advice |
//! | [`message`] | whole WebSocket messages in and out of the sessions |
//! | [`server`] | [`server::ServerSession`]: heartbeat, outbound queue, limits, close |
//! | [`streams`] | the fan-out table: subscribers, limits, late joiners, finished campaigns, revocation, publish validation |
//! | [`client`] | [`client::ClientSession`]: handshake request, decoding, liveness, advice |
//! | [`resume`] | resume values of §2.11: `new` or `<epoch>:<offset>`, every refusal typed |
//! | [`backoff`] | reconnect delays: exponential backoff with full jitter |
//! | [`config`] | [`config::ConfigError`]: what the configurations' `validate` refuse |
//! | `testing` | the deterministic `Pair` harness (cargo feature `testing`) |
//!
//! Values are checked where they enter: an event's `campaignId` is a [`route::CampaignId`]
//! (the same 1–128 characters of `[A-Za-z0-9_-]` as the channel's path), so decoding refuses
//! a frame whose `campaignId` is anything else, naming the field; timestamps are validated
//! [`event::Timestamp`]s. The event structs are `#[non_exhaustive]` and built with their
//! `new` and `with_*` methods.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod backoff;
pub mod client;
pub mod close;
pub mod config;
pub mod event;
pub mod handshake;
pub mod message;
pub mod resume;
pub mod route;
pub mod server;
pub mod streams;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
