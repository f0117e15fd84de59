//! A reconnecting client: [`Client`] → [`Subscription`], a [`Stream`](futures_util::Stream)
//! of typed events.
//!
//! The protocol logic — the handshake request, decoding, liveness, the §2.6 reaction to every
//! way a connection ends, the jittered backoff — is the core's [`ClientSession`]. This module
//! only does the I/O (tokio-tungstenite) and the waiting (tokio's clock, so tests can pause it).
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use misar_proto::auth::ApiKey;
//! use misar_proto_tokio::client::Client;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ApiKey::parse("msk_your_api_key")?;
//! let client = Client::builder("wss://api.misar.io/mail/ws", key).build()?;
//! let mut inbox = client.subscribe_inbox();
//! while let Some(item) = inbox.next().await {
//!     match item {
//!         Ok(event) => println!("{}", event.type_name()),
//!         // Events may have been missed across a reconnect (§2.11); the stream goes on.
//!         Err(error) if !error.is_final() => eprintln!("{error}: refetching the inbox"),
//!         Err(error) => return Err(error.into()), // the last item: the subscription is over
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # What the stream yields
//!
//! A [`Subscription`] yields `Result<Event, SubscriptionError>`:
//!
//! - `Ok(event)` for every event, in the order the server sent them, across reconnects;
//! - `Err(error)` once, as the **last** item, when the subscription cannot go on: HTTP 403 (with
//!   the server's JSON body), HTTP 400 (e.g. a resume value the server refused), close 4401 or
//!   4403, another final refusal, or the [`ReconnectPolicy`] giving up;
//! - `Err(SubscriptionError::NotRecovered { .. })`, the one error that is **not** final
//!   ([`SubscriptionError::is_final`]), when a reconnect could not recover what was published
//!   while the connection was down (§2.11): the application refetches its state, and events
//!   keep coming. `event?` in a loop stops there, which is safe; match on it to go on.
//! - `None` when it finished normally: a campaign's terminal event (then the server's close
//!   1000), or [`Subscription::close`].
//!
//! Reconnects are silent there (they are logged with `tracing`), and so are messages that do
//! not decode as an event of the channel (logged, skipped; the connection stays up). A caller
//! that wants to see them — a CLI reporting reconnects, a relay that needs the frames as
//! received — turns the subscription into [`Updates`] with [`Subscription::updates`], whose
//! items are [`Update`]s: `Connected`, `Resumed { position }`, `NotRecovered { position }`,
//! `Event { event, raw, offset }`, `Invalid { error, raw }`,
//! `Reconnecting { after, cause, attempt, retry_after }`.
//!
//! # Missed events (§2.11)
//!
//! Subscriptions opt in by default ([`ClientBuilder::resume`]): the first handshake sends
//! `Misar-Resume: new`, every reconnect the position of the last event received, and the
//! server replays what the connection missed before live events — or says it cannot
//! (`recovered: false`), which is reported as above, never skipped.
//! [`Subscription::position`] is the position to keep for a later run
//! ([`Client::subscribe_from`]).
//!
//! # Transport notes
//!
//! - Messages over [`ClientBuilder::max_message_size`] fail the connection in tungstenite
//!   (which cannot skip a message), so they count as a dropped connection and the client
//!   reconnects with backoff.
//! - tungstenite answers pings itself; the session is told not to (one pong per ping).
//! - `wss://` needs the `rustls-tls` feature (rustls with the webpki root certificates). Without
//!   it, such a subscription ends with [`SubscriptionError::TlsUnavailable`].
//! - The handshake is this crate's own, not tungstenite's: tungstenite's writes the whole
//!   request (the key included) to a `trace` record of the `log` target
//!   `tungstenite::handshake::client`. No log record of any level ever holds the key (§2.10).
//! - A 429 or 503 with `Retry-After: <seconds>` is waited out (capped by the backoff's cap)
//!   instead of the drawn delay: [`Update::Reconnecting`] says so.

mod driver;
mod handshake;
mod subscription;
mod update;
mod wire;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use misar_proto::auth::ApiKey;
use misar_proto::backoff::BackoffConfig;
use misar_proto::client::{AuthStyle, ClientConfig, ClientSession, RejectionBody, RequestError};
use misar_proto::close::{CloseCode, Disconnect, Fatal};
use misar_proto::config::{ConfigError, ConfigProblem};
use misar_proto::resume::Position;
use misar_proto::route::{CampaignId, Channel};

pub use subscription::{Subscription, Updates};
pub use update::Update;

/// How long a connection attempt (TCP connect and WebSocket handshake) may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether and how often the client reconnects after a connection ends or an attempt fails.
///
/// Only the ends §2.6 says to retry are concerned; 403, 4401 and 4403 always stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReconnectPolicy {
    /// Reconnect for as long as the subscription lives (the default).
    #[default]
    Always,
    /// Never reconnect: the first end of a connection ends the subscription with
    /// [`SubscriptionError::GaveUp`].
    Never,
    /// At most this many reconnect attempts in a row. The count starts over when a connection
    /// stayed up for one ping interval (when the core resets its backoff).
    UpTo(u32),
}

impl ReconnectPolicy {
    /// Whether reconnect attempt number `attempt` (1 = the first since the backoff's reset)
    /// may be made.
    fn allows(self, attempt: u32) -> bool {
        match self {
            ReconnectPolicy::Always => true,
            ReconnectPolicy::Never => false,
            ReconnectPolicy::UpTo(max) => attempt <= max,
        }
    }
}

/// Builds a [`Client`]. Start from [`Client::builder`].
///
/// Defaults (§2.5/§2.6): `Authorization: Bearer` authentication, 30 s ping interval and 30 s
/// pong timeout (liveness window 60 s), 5 s close grace, 64 KiB messages, backoff from 500 ms
/// to 30 s, reconnect forever, 10 s connect timeout.
#[derive(Clone, Debug)]
#[must_use]
pub struct ClientBuilder {
    config: ClientConfig,
    reconnect: ReconnectPolicy,
    connect_timeout: Duration,
    jitter_seed: Option<u64>,
}

impl ClientBuilder {
    /// A builder for the server at `url` — `ws://` or `wss://`, up to the mount prefix
    /// (`wss://api.misar.io/mail/ws`); the channel's path is appended per subscription.
    pub fn new(url: impl Into<String>, key: ApiKey) -> Self {
        Self::from_config(ClientConfig::new(url, key))
    }

    /// A builder starting from a core configuration (every field is honoured, except
    /// `answer_pings`: tungstenite answers pings itself).
    pub fn from_config(config: ClientConfig) -> Self {
        Self {
            config,
            reconnect: ReconnectPolicy::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            jitter_seed: None,
        }
    }

    /// Where the key goes: [`AuthStyle::Header`] (default), [`AuthStyle::Query`] (`?token=`),
    /// or [`AuthStyle::Subprotocol`] (`Sec-WebSocket-Protocol: misar.v1, misar.bearer.<key>`;
    /// the server must echo `misar.v1`, else the attempt fails and is retried).
    pub fn auth(mut self, style: AuthStyle) -> Self {
        self.config.auth = style;
        self
    }

    /// The server's heartbeat: it pings every `ping_interval`; a connection on which nothing
    /// arrived for `ping_interval + pong_timeout` is declared dead and replaced.
    pub fn heartbeat(mut self, ping_interval: Duration, pong_timeout: Duration) -> Self {
        self.config.ping_interval = ping_interval;
        self.config.pong_timeout = pong_timeout;
        self
    }

    /// How long to wait for the server's close after sending one (or after a terminal event).
    pub fn close_grace(mut self, grace: Duration) -> Self {
        self.config.close_grace = grace;
        self
    }

    /// The largest message accepted, in bytes: tungstenite's message and frame limits and the
    /// event decoder's.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message = bytes;
        self
    }

    /// The reconnect backoff's base and cap.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// A fixed seed for the backoff's jitter of every subscription (for reproducible tests).
    /// By default every subscription draws its own from the standard library's per-process
    /// random hasher keys (seeded by the operating system), so clients do not share delays.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Whether and how often to reconnect.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Whether subscriptions opt in to missed-event recovery (§2.11): `true` by default. Each
    /// handshake then carries `Misar-Resume` (`new`, then the last position seen), so a
    /// reconnect gets what was published while it was down, or is told it cannot
    /// ([`Update::NotRecovered`], [`SubscriptionError::NotRecovered`]). `false` sends no
    /// resume value: events published between two connections are lost without notice.
    pub fn resume(mut self, resume: bool) -> Self {
        self.config.resume = resume;
        self
    }

    /// How long one connection attempt may take before it counts as failed.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Checks the URL and the settings, and builds the client. Nothing connects yet.
    ///
    /// Refused: a URL the core cannot connect to ([`BuildError::Url`]); a setting
    /// [`ClientConfig::validate`] refuses (a zero heartbeat, close grace, message size or
    /// backoff), or a zero [`connect_timeout`](Self::connect_timeout), which would fail
    /// every attempt at once ([`BuildError::Config`]).
    pub fn build(mut self) -> Result<Client, BuildError> {
        // tungstenite answers pings on its own; a second pong from the session would be noise.
        self.config.answer_pings = false;
        // The URL is the same for every channel but the appended path: checking it once for
        // the inbox catches every error the core would report later.
        ClientSession::new(self.config.clone(), Channel::Inbox, 0).handshake_request()?;
        self.config.validate()?;
        if self.connect_timeout.is_zero() {
            return Err(BuildError::Config(ConfigError::new(
                "connect_timeout",
                ConfigProblem::Zero,
            )));
        }
        Ok(Client {
            config: self.config,
            reconnect: self.reconnect,
            connect_timeout: self.connect_timeout,
            jitter_seed: self.jitter_seed,
        })
    }
}

/// Why a [`ClientBuilder`] could not build a client. Never contains the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The server URL is unusable.
    #[error(transparent)]
    Url(#[from] RequestError),
    /// A setting is refused (it names the field: a [`ClientConfig`] field such as
    /// `"pong_timeout"` or `"backoff.base"`, or the builder's own `"connect_timeout"`).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A configured client; each `subscribe_*` call opens one independent [`Subscription`].
///
/// Cheap to clone. Its `Debug` output shows the key only as `msk_…abcd` and the URL without
/// its query.
#[derive(Clone, Debug)]
pub struct Client {
    config: ClientConfig,
    reconnect: ReconnectPolicy,
    connect_timeout: Duration,
    jitter_seed: Option<u64>,
}

impl Client {
    /// A builder for the server at `url` (up to the mount prefix) with `key`.
    pub fn builder(url: impl Into<String>, key: ApiKey) -> ClientBuilder {
        ClientBuilder::new(url, key)
    }

    /// The account's inbox events. Connects on the first poll.
    pub fn subscribe_inbox(&self) -> Subscription {
        self.subscribe(Channel::Inbox)
    }

    /// One campaign's progress; ends after its terminal event. Connects on the first poll.
    pub fn subscribe_campaign(&self, campaign: CampaignId) -> Subscription {
        self.subscribe(Channel::Campaign(campaign))
    }

    /// A subscription to `channel`. Connects on the first poll.
    pub fn subscribe(&self, channel: Channel) -> Subscription {
        Subscription::start(self.session(channel), self.reconnect, self.connect_timeout)
    }

    /// A subscription to `channel` that resumes from `position` (one the application kept,
    /// e.g. [`Subscription::position`] of an earlier run): the first connection asks for
    /// every event after it (§2.11). Without [`ClientBuilder::resume`] it is [`subscribe`](Self::subscribe).
    pub fn subscribe_from(&self, channel: Channel, position: Position) -> Subscription {
        let mut session = self.session(channel);
        session.resume_from(position);
        Subscription::start(session, self.reconnect, self.connect_timeout)
    }

    /// The core session of a new subscription, with its own jitter seed (or the fixed one).
    fn session(&self, channel: Channel) -> ClientSession {
        let seed = self.jitter_seed.unwrap_or_else(entropy_seed);
        ClientSession::new(self.config.clone(), channel, seed)
    }

    /// The core configuration subscriptions are made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }
}

/// Why a subscription ended with an error: the last item of the stream, except
/// [`NotRecovered`](SubscriptionError::NotRecovered) ([`is_final`](SubscriptionError::is_final)).
/// Never contains the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    /// The server refused the handshake with a final HTTP status (403 for a bad key or a
    /// foreign campaign, §2.3). Not retried.
    #[error("the server refused the subscription with HTTP {status}{}", describe_rejection(.rejection.as_ref()))]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Why the core considers it final.
        fatal: Fatal,
        /// The server's JSON body, when it had the §2.3 shape.
        rejection: Option<RejectionBody>,
    },
    /// The server closed the connection with a code that forbids retrying: 4401 (key missing,
    /// invalid or revoked) or 4403 (campaign not this account's).
    #[error("the server closed the subscription with {code} ({}){}", describe_fatal(*.fatal), describe_reason(.reason))]
    Closed {
        /// The close code.
        code: CloseCode,
        /// Why the core considers it final.
        fatal: Fatal,
        /// The close reason the server gave (control characters removed).
        reason: String,
    },
    /// The core advised stopping for another reason.
    #[error("the subscription stopped: {}", describe_fatal(*.fatal))]
    Stopped {
        /// Why.
        fatal: Fatal,
        /// How the last connection ended.
        cause: Disconnect,
    },
    /// The [`ReconnectPolicy`] allows no more attempts.
    #[error("gave up after {attempts} reconnect attempt(s); the last connection ended: {cause:?}")]
    GaveUp {
        /// Reconnect attempts made in a row before giving up.
        attempts: u32,
        /// How the last connection (or attempt) ended.
        cause: Disconnect,
    },
    /// The handshake request could not be built (a URL problem).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A `wss://` URL, but this build has no TLS support (enable the `rustls-tls` feature).
    #[error("wss:// needs TLS support: build misar-proto-tokio with the `rustls-tls` feature")]
    TlsUnavailable,
    /// Events may have been missed across a reconnect (§2.11): the server answered
    /// `recovered: false`, or did not answer the opt-in (`position: None`). **Not the last
    /// item**: the subscription goes on with live events (poll it again); the application
    /// refetches its state out of band. See [`is_final`](Self::is_final).
    #[error("events may have been missed (not recovered{}); refetch the state", describe_position(.position.as_ref()))]
    NotRecovered {
        /// The stream's latest position, which the subscription now holds.
        position: Option<Position>,
    },
}

fn describe_position(position: Option<&Position>) -> String {
    match position {
        Some(position) => format!(", now at {position}"),
        None => ": the server did not answer the resume opt-in".to_owned(),
    }
}

impl SubscriptionError {
    /// Whether the subscription is over after this error: every error is final except
    /// [`NotRecovered`](Self::NotRecovered), after which events keep coming.
    pub fn is_final(&self) -> bool {
        !matches!(self, SubscriptionError::NotRecovered { .. })
    }

    /// The core's reason to stop, for a refusal by the server.
    pub fn fatal(&self) -> Option<Fatal> {
        match self {
            SubscriptionError::Rejected { fatal, .. }
            | SubscriptionError::Closed { fatal, .. }
            | SubscriptionError::Stopped { fatal, .. } => Some(*fatal),
            _ => None,
        }
    }

    /// Whether the server refused the credentials or the campaign: HTTP 403 (or 401), close
    /// 4401 or close 4403.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self.fatal(),
            Some(Fatal::HandshakeForbidden | Fatal::Unauthorized | Fatal::Forbidden)
        )
    }

    /// The server's JSON body of an HTTP rejection.
    pub fn rejection(&self) -> Option<&RejectionBody> {
        match self {
            SubscriptionError::Rejected { rejection, .. } => rejection.as_ref(),
            _ => None,
        }
    }
}

/// A seed that differs between processes and between calls (the core takes its randomness
/// from its caller): the standard library seeds `RandomState` from the operating system once
/// per thread and perturbs it for every new instance.
fn entropy_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x6d69_7361_725f_6261);
    hasher.finish()
}

fn describe_rejection(rejection: Option<&RejectionBody>) -> String {
    match rejection {
        None => String::new(),
        Some(body) => {
            let mut text = String::from(": ");
            text.extend(body.error.chars().filter(|c| !c.is_control()));
            if let Some(message) = &body.message {
                text.push_str(" — ");
                text.extend(message.chars().filter(|c| !c.is_control()));
            }
            text
        }
    }
}

fn describe_reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

fn describe_fatal(fatal: Fatal) -> DescribeFatal {
    DescribeFatal(fatal)
}

/// `Fatal` in words (the core gives it `Debug` only).
struct DescribeFatal(Fatal);

impl fmt::Display for DescribeFatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Fatal::Unauthorized => {
                f.write_str("unauthorized: the API key is missing, invalid or revoked")
            }
            Fatal::Forbidden => f.write_str("forbidden: the campaign is not this account's"),
            Fatal::HandshakeForbidden => f.write_str("forbidden before the upgrade"),
            Fatal::HandshakeRefused(status) => write!(f, "refused with HTTP {status}"),
            other => write!(f, "{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey::parse("msk_secret_unit_key_9876").unwrap()
    }

    #[test]
    fn build_checks_the_url() {
        let err = Client::builder("https://h/mail/ws", key())
            .build()
            .unwrap_err();
        assert_eq!(err, BuildError::Url(RequestError::UnsupportedScheme));
        assert!(Client::builder("ws://h/mail/ws", key()).build().is_ok());
    }

    #[test]
    fn build_checks_the_settings() {
        let zero = Duration::ZERO;
        let cases: [(ClientBuilder, &str); 6] = [
            (
                Client::builder("ws://h/mail/ws", key()).heartbeat(zero, Duration::from_secs(1)),
                "ping_interval",
            ),
            (
                Client::builder("ws://h/mail/ws", key()).heartbeat(Duration::from_secs(1), zero),
                "pong_timeout",
            ),
            (
                Client::builder("ws://h/mail/ws", key()).close_grace(zero),
                "close_grace",
            ),
            (
                Client::builder("ws://h/mail/ws", key()).max_message_size(0),
                "max_message",
            ),
            (
                Client::builder("ws://h/mail/ws", key()).backoff(BackoffConfig {
                    base: zero,
                    cap: Duration::from_secs(1),
                }),
                "backoff.base",
            ),
            (
                Client::builder("ws://h/mail/ws", key()).connect_timeout(zero),
                "connect_timeout",
            ),
        ];
        for (builder, field) in cases {
            assert_eq!(
                builder.build().unwrap_err(),
                BuildError::Config(ConfigError::new(field, ConfigProblem::Zero))
            );
        }
        // A URL problem is reported first, as before.
        let err = Client::builder("https://h/mail/ws", key())
            .connect_timeout(zero)
            .build()
            .unwrap_err();
        assert_eq!(err, BuildError::Url(RequestError::UnsupportedScheme));
        // Short but non-zero settings (as tests use) are fine.
        assert!(
            Client::builder("ws://h/mail/ws", key())
                .heartbeat(Duration::from_millis(5), Duration::from_millis(5))
                .close_grace(Duration::from_millis(1))
                .connect_timeout(Duration::from_millis(1))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn debug_output_never_holds_the_key() {
        let client = Client::builder("ws://h/mail/ws?x=1", key())
            .auth(AuthStyle::Query)
            .build()
            .unwrap();
        let builder = Client::builder("ws://h/mail/ws", key());
        let text = format!("{builder:?} {client:?} {:?}", client.subscribe_inbox());
        assert!(!text.contains("msk_secret_unit_key_9876"), "{text}");
        assert!(text.contains("msk_…9876"), "{text}");
    }

    #[test]
    fn subscriptions_draw_their_own_jitter_unless_seeded() {
        use misar_proto::backoff::BackoffConfig;
        let config = || {
            Client::builder("ws://h/mail/ws", key()).backoff(BackoffConfig {
                base: Duration::from_secs(1000),
                cap: Duration::from_secs(1000),
            })
        };
        let first_delay = |client: &Client| {
            let mut session = client.session(Channel::Inbox);
            session.handle_connect_failed(std::time::Instant::now())
        };
        let unseeded = config().build().unwrap();
        let draws: std::collections::HashSet<_> = (0..20).map(|_| first_delay(&unseeded)).collect();
        assert!(draws.len() > 15, "{draws:?}");
        let seeded = config().jitter_seed(3).build().unwrap();
        let draws: std::collections::HashSet<_> = (0..20).map(|_| first_delay(&seeded)).collect();
        assert_eq!(draws.len(), 1);
    }

    #[test]
    fn policy_counts_attempts() {
        assert!(ReconnectPolicy::Always.allows(u32::MAX));
        assert!(!ReconnectPolicy::Never.allows(1));
        assert!(ReconnectPolicy::UpTo(2).allows(2));
        assert!(!ReconnectPolicy::UpTo(2).allows(3));
    }

    #[test]
    fn errors_read_well_and_classify() {
        let rejected = SubscriptionError::Rejected {
            status: 403,
            fatal: Fatal::HandshakeForbidden,
            rejection: serde_json::from_str(
                r#"{"error":"forbidden","closeCode":4403,"message":"not yours\u001b"}"#,
            )
            .ok(),
        };
        assert_eq!(
            rejected.to_string(),
            "the server refused the subscription with HTTP 403: forbidden — not yours"
        );
        assert!(rejected.is_auth_failure());
        let closed = SubscriptionError::Closed {
            code: CloseCode::Unauthorized,
            fatal: Fatal::Unauthorized,
            reason: String::new(),
        };
        assert!(closed.to_string().contains("4401"));
        assert!(closed.is_auth_failure());
        let gave_up = SubscriptionError::GaveUp {
            attempts: 0,
            cause: Disconnect::Dropped,
        };
        assert!(!gave_up.is_auth_failure());
        assert_eq!(gave_up.fatal(), None);
    }
}
