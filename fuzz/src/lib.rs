//! The bodies of the fuzz targets of `misar-proto`, one module per target.
//!
//! Each `run(data)` never returns an error: it feeds `data` to the core and **panics** when an
//! invariant breaks, which libFuzzer reports as a crash. The binaries in `fuzz_targets/` are
//! one-liners into these functions, and `tests/seeds.rs` replays every committed seed through
//! them under a plain `cargo test`.
//!
//! | target | input | what must hold |
//! |---|---|---|
//! | [`event_decode`] | raw bytes (a text frame) | decode never panics; what decodes re-encodes and decodes equal |
//! | [`credentials`] | a lenient HTTP request head | extraction agrees with a model of §2.2; no invalid key comes out; routing round-trips |
//! | [`handshake`] | 4 control bytes + a request head | `Accepted` only when the hooks approved that key and ownership; rejections well-formed |
//! | [`close_frame`] | a close frame payload (2-byte code + reason) | parsing, reasons and retry advice follow §2.6 |
//! | [`server_session`] | config + a stream of operations | at most one close, nothing after it, bounded queue, timers set while open |
//! | [`client_session`] | config + a stream of operations | one outcome per connection, advice per §2.6, timers set while connected |
//! | [`streams`] | table config + a stream of operations | recipients and answers are the model's, limits and shutdown hold, terminal sticks, nothing after a revocation, relayed bytes unchanged, memory bounded |
#![forbid(unsafe_code)]

pub mod client_session;
pub mod close_frame;
pub mod credentials;
pub mod encode;
pub mod event_decode;
pub mod handshake;
pub mod request;
pub mod samples;
pub mod seeds;
pub mod server_session;
pub mod streams;

/// The seven targets, in the order `fuzz/run` runs them.
pub const TARGETS: [&str; 7] = [
    "close_frame",
    "credentials",
    "handshake",
    "event_decode",
    "server_session",
    "client_session",
    "streams",
];

/// Runs the target called `name` on `data` (for replaying inputs outside libFuzzer).
///
/// Returns `false` for an unknown target name.
pub fn run_target(name: &str, data: &[u8]) -> bool {
    match name {
        "close_frame" => close_frame::run(data),
        "credentials" => credentials::run(data),
        "handshake" => handshake::run(data),
        "event_decode" => event_decode::run(data),
        "server_session" => server_session::run(data),
        "client_session" => client_session::run(data),
        "streams" => streams::run(data),
        _ => return false,
    }
    true
}
