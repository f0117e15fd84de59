//! The pre-upgrade decision (§2.1–§2.3) as states the caller must consume.
//!
//! There are no callbacks: [`start`] looks at the request head and either refuses it or asks a
//! question, and each question is a value whose methods are the possible answers. An async
//! adapter awaits its database between two steps; a test answers from a table.
//!
//! ```text
//! start(config, request head)
//!   ├─ Rejected (405 method, 404 route, 403 origin, 400 subprotocols, 403/4401 credentials)
//!   └─ NeedsAuthentication(key) ── .authenticated(account) ─┬─ inbox ──────────────→ Accepted
//!        ├─ .unknown_key() → Rejected (403/4401)             └─ campaign → NeedsOwnership
//!        └─ .hook_failed() → Rejected (503)                       ├─ .grant() → Accepted
//!                                                                  ├─ .deny()  → Rejected (403/4403)
//!                                                                  └─ .hook_failed() → Rejected (503)
//! ```
//!
//! The checks run in this order, so a cheaper or less revealing answer always wins: method
//! (405), route (404: decided before authentication, whatever the credentials), `Origin`
//! allowlist (403), the offered subprotocols (400 for a `misar.bearer.` entry without
//! `misar.v1`, §2.12), the resume value (400 for a bad or ambiguous one, §2.11: see
//! [`crate::resume::extract_resume`]), credentials ([`extract_credentials`]: every ambiguity is refused
//! before the key-check hook is asked), then the hooks. A request that offered `misar.v1` gets
//! it echoed in the 101 ([`Accepted::subprotocol`], [`CloseAfterUpgrade::subprotocol`]), never
//! anything else. Limits on connection counts (§2.8) are the
//! adapter's, after [`Accepted`]: see [`Rejected::too_many_for_account`] and
//! [`Rejected::too_many_connections`].
//!
//! # The whole loop
//!
//! ```
//! use misar_proto::auth::AccountId;
//! use misar_proto::handshake::{self, HandshakeConfig, RejectAction, Step};
//!
//! // The embedder's tables. Keys are compared in constant time (§2.10).
//! let keys = [("msk_alice_key", "alice"), ("msk_bob_key", "bob")];
//! let campaigns = [("spring-sale", "alice")];
//!
//! /// Returns the status to send, or 101 for an upgrade.
//! fn decide(
//!     config: &HandshakeConfig,
//!     request: &http::request::Parts,
//!     keys: &[(&str, &str)],
//!     campaigns: &[(&str, &str)],
//! ) -> u16 {
//!     let mut step = handshake::start(config, request);
//!     loop {
//!         step = match step {
//!             Step::NeedsAuthentication(question) => {
//!                 let account = keys
//!                     .iter()
//!                     .find(|(stored, _)| question.key().ct_eq_str(stored))
//!                     .map(|(_, account)| AccountId::from(*account));
//!                 match account {
//!                     Some(account) => question.authenticated(account),
//!                     None => Step::Rejected(question.unknown_key()),
//!                 }
//!             }
//!             Step::NeedsOwnership(question) => {
//!                 // An unknown campaign and a foreign one get the same answer.
//!                 let owned = campaigns.iter().any(|(campaign, owner)| {
//!                     question.campaign().as_str() == *campaign
//!                         && question.account().as_str() == *owner
//!                 });
//!                 if owned {
//!                     Step::Accepted(question.grant())
//!                 } else {
//!                     Step::Rejected(question.deny())
//!                 }
//!             }
//!             Step::Accepted(accepted) => {
//!                 // Upgrade, and build the server session from `accepted`.
//!                 let _ = (accepted.account(), accepted.channel());
//!                 return 101;
//!             }
//!             Step::Rejected(rejected) => {
//!                 return match rejected.action() {
//!                     RejectAction::Respond(response) => response.status().as_u16(),
//!                     // Upgrade, then close at once with this code.
//!                     RejectAction::UpgradeThenClose(close) => close.code().as_u16(),
//!                     _ => 500,
//!                 };
//!             }
//!         }
//!     }
//! }
//!
//! let config = HandshakeConfig::default();
//! let head = |uri: &str, auth: Option<&str>| {
//!     let mut request = http::Request::get(uri);
//!     if let Some(auth) = auth {
//!         request = request.header("authorization", auth);
//!     }
//!     request.body(()).unwrap().into_parts().0
//! };
//! let run = |uri, auth| decide(&config, &head(uri, auth), &keys, &campaigns);
//!
//! assert_eq!(run("/mail/ws/inbox?token=msk_bob_key", None), 101);
//! assert_eq!(run("/mail/ws/campaigns/spring-sale", Some("Bearer msk_alice_key")), 101);
//! assert_eq!(run("/mail/ws/campaigns/spring-sale", Some("Bearer msk_bob_key")), 403);
//! assert_eq!(run("/mail/ws/campaigns/no-such-thing", Some("Bearer msk_alice_key")), 403);
//! assert_eq!(run("/mail/ws/inbox", Some("Bearer msk_mallory")), 403);
//! assert_eq!(run("/mail/ws/elsewhere", Some("Bearer msk_alice_key")), 404);
//!
//! // Browsers cannot read the status of a failed upgrade: close with 4401/4403 instead.
//! let config = HandshakeConfig::default()
//!     .with_rejection_style(handshake::RejectionStyle::CloseAfterUpgrade);
//! assert_eq!(decide(&config, &head("/mail/ws/inbox?token=msk_nobody", None), &keys, &campaigns), 4401);
//! ```

mod rejection;

use http::header::ORIGIN;
use http::{Method, Version};

use crate::auth::{
    AccountId, ApiKey, CredentialSource, SUBPROTOCOL, extract_credentials, offered_protocols,
};
use crate::resume::{ResumeRequest, extract_resume};
use crate::route::{CampaignId, Channel, Routes};

pub use rejection::{BadRequest, CloseAfterUpgrade, RejectAction, Rejected, Rejection};

/// How an unauthenticated or unauthorized request is refused (§2.3).
///
/// Only the 4401/4403 failures (credentials, unknown key, campaign not owned) follow the
/// style; 404, 405, a refused `Origin`, failed hooks and connection limits are always HTTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionStyle {
    /// HTTP 403 before the handshake completes (the default, as the protocol source says).
    #[default]
    Http,
    /// Upgrade, then close at once with 4401 or 4403 (browsers can read a close code, not the
    /// status of a failed upgrade).
    CloseAfterUpgrade,
    /// `Http` for header-authenticated clients, `CloseAfterUpgrade` for browsers: `?token=`
    /// and `misar.bearer.` subprotocol clients (§2.12).
    /// A request with no credentials at all, or with a problem involving the `Authorization`
    /// header, is refused over HTTP (see [`CredentialError::place`](crate::auth::CredentialError::place)).
    Auto,
}

/// Configuration of the pre-upgrade decision.
///
/// ```
/// use misar_proto::handshake::{HandshakeConfig, RejectionStyle};
/// use misar_proto::route::Routes;
/// let config = HandshakeConfig::new()
///     .with_routes(Routes::new("/realtime"))
///     .with_rejection_style(RejectionStyle::Auto)
///     .with_allowed_origins(["https://app.example.com"]);
/// assert_eq!(config.routes.prefix(), "/realtime");
/// ```
#[derive(Clone, Debug, Default)]
pub struct HandshakeConfig {
    /// Where the channels are mounted.
    pub routes: Routes,
    /// How auth failures are refused.
    pub rejection_style: RejectionStyle,
    /// When `Some`, only requests whose `Origin` is in the list are accepted (a request without
    /// `Origin`, i.e. not from a browser, is allowed). Compared ASCII-case-insensitively and
    /// otherwise exactly (`https://a.example` is not `https://a.example:443` nor
    /// `https://a.example/`). A request with several `Origin` headers is refused.
    pub allowed_origins: Option<Vec<String>>,
}

impl HandshakeConfig {
    /// The defaults: prefix `/mail/ws`, [`RejectionStyle::Http`], no `Origin` allowlist.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mounts the channels at `routes`.
    pub fn with_routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// Refuses auth failures in `style`.
    pub fn with_rejection_style(mut self, style: RejectionStyle) -> Self {
        self.rejection_style = style;
        self
    }

    /// Accepts browser requests only from these origins (e.g. `https://app.example.com`).
    pub fn with_allowed_origins<I>(mut self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.allowed_origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Whether the request's `Origin` passes the allowlist.
    fn origin_allowed(&self, headers: &http::HeaderMap) -> bool {
        let Some(allowed) = &self.allowed_origins else {
            return true;
        };
        let mut values = headers.get_all(ORIGIN).iter();
        let Some(value) = values.next() else {
            // Not a browser: an allowlist only defends against cross-site requests.
            return true;
        };
        if values.next().is_some() {
            return false;
        }
        let Ok(origin) = value.to_str() else {
            return false;
        };
        let origin = origin.trim_matches([' ', '\t']);
        allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
    }
}

/// One state of the decision.
#[must_use = "a handshake step must be driven to Accepted or Rejected"]
#[derive(Debug)]
pub enum Step {
    /// Ask the key-check hook about [`NeedsAuthentication::key`].
    NeedsAuthentication(NeedsAuthentication),
    /// Ask the ownership hook whether the account owns the campaign.
    NeedsOwnership(NeedsOwnership),
    /// Upgrade and serve.
    Accepted(Accepted),
    /// Refuse (see [`Rejected::action`]).
    Rejected(Rejected),
}

/// Starts the decision for a request head.
///
/// The method must be `GET` (HTTP/1.1 upgrade) or, on HTTP/2, `CONNECT` (the extended CONNECT
/// of RFC 8441 that carries WebSockets over HTTP/2). The core does not check the WebSocket
/// headers themselves (`Upgrade`, `Sec-WebSocket-Key`, ...): the WebSocket library does.
pub fn start(config: &HandshakeConfig, request: &http::request::Parts) -> Step {
    let method_ok = request.method == Method::GET
        || (request.method == Method::CONNECT && request.version == Version::HTTP_2);
    if !method_ok {
        return Step::Rejected(Rejected::http(Rejection::MethodNotAllowed));
    }
    let channel = match config.routes.resolve(request.uri.path()) {
        Ok(channel) => channel,
        Err(not_found) => return Step::Rejected(Rejected::http(Rejection::NotFound(not_found))),
    };
    if !config.origin_allowed(&request.headers) {
        return Step::Rejected(Rejected::http(Rejection::OriginRefused));
    }
    let offered = match offered_protocols(&request.headers) {
        Ok(offered) => offered,
        Err(_) => {
            return Step::Rejected(Rejected::http(Rejection::BadRequest(
                BadRequest::MalformedProtocols,
            )));
        }
    };
    if offered.bearer_entries > 0 && !offered.misar_v1 {
        // A browser would fail the 101 anyway: it needs one of its offers echoed.
        return Step::Rejected(Rejected::http(Rejection::BadRequest(
            BadRequest::BearerWithoutProtocol,
        )));
    }
    let resume = match extract_resume(request) {
        Ok(resume) => resume,
        Err(error) => return Step::Rejected(Rejected::http(Rejection::BadRequest(error.into()))),
    };
    let echo = offered.misar_v1.then_some(SUBPROTOCOL);
    let style = config.rejection_style;
    match extract_credentials(request) {
        Ok(credentials) => Step::NeedsAuthentication(NeedsAuthentication {
            key: credentials.key,
            source: credentials.source,
            channel,
            style,
            echo,
            resume,
        }),
        Err(error) => {
            let place = error.place();
            Step::Rejected(Rejected::auth(
                Rejection::Unauthenticated(error),
                style,
                place,
                echo,
            ))
        }
    }
}

/// The request carried a well-formed key; the embedder's hook must resolve it.
///
/// Compare the key against stored keys in constant time ([`ApiKey::ct_eq_str`]), or look up
/// a hash of it.
#[must_use = "answer with .authenticated(), .unknown_key() or .hook_failed()"]
#[derive(Debug)]
pub struct NeedsAuthentication {
    key: ApiKey,
    source: CredentialSource,
    channel: Channel,
    style: RejectionStyle,
    echo: Option<&'static str>,
    resume: Option<ResumeRequest>,
}

impl NeedsAuthentication {
    /// The key to check.
    pub fn key(&self) -> &ApiKey {
        &self.key
    }

    /// Where the key came from.
    pub fn credential_source(&self) -> CredentialSource {
        self.source
    }

    /// The channel asked for.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The key belongs to `account`: [`Step::Accepted`] for the inbox,
    /// [`Step::NeedsOwnership`] for a campaign.
    pub fn authenticated(self, account: AccountId) -> Step {
        match self.channel {
            Channel::Campaign(campaign) => Step::NeedsOwnership(NeedsOwnership {
                account,
                campaign,
                source: self.source,
                style: self.style,
                echo: self.echo,
                resume: self.resume,
            }),
            channel @ Channel::Inbox => Step::Accepted(Accepted {
                account,
                channel,
                source: self.source,
                echo: self.echo,
                resume: self.resume,
            }),
        }
    }

    /// The hook does not know the key: 403 or close 4401.
    pub fn unknown_key(self) -> Rejected {
        Rejected::auth(
            Rejection::UnknownKey,
            self.style,
            Some(self.source),
            self.echo,
        )
    }

    /// The hook failed (e.g. its database is down): 503, never an upgrade.
    pub fn hook_failed(self) -> Rejected {
        Rejected::http(Rejection::HookFailed)
    }
}

/// The account is known; the embedder's hook must say whether it owns the campaign.
///
/// A campaign that does not exist must get the same answer as one owned by someone else
/// ([`NeedsOwnership::deny`]), so the channel is no oracle for campaign ids.
#[must_use = "answer with .grant(), .deny() or .hook_failed()"]
#[derive(Debug)]
pub struct NeedsOwnership {
    account: AccountId,
    campaign: CampaignId,
    source: CredentialSource,
    style: RejectionStyle,
    echo: Option<&'static str>,
    resume: Option<ResumeRequest>,
}

impl NeedsOwnership {
    /// The authenticated account.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// The campaign asked for.
    pub fn campaign(&self) -> &CampaignId {
        &self.campaign
    }

    /// Where the key came from.
    pub fn credential_source(&self) -> CredentialSource {
        self.source
    }

    /// The account owns the campaign.
    pub fn grant(self) -> Accepted {
        Accepted {
            account: self.account,
            channel: Channel::Campaign(self.campaign),
            source: self.source,
            echo: self.echo,
            resume: self.resume,
        }
    }

    /// The account does not own the campaign, or the campaign does not exist: 403 or close
    /// 4403, the same either way.
    pub fn deny(self) -> Rejected {
        Rejected::auth(
            Rejection::NotOwned,
            self.style,
            Some(self.source),
            self.echo,
        )
    }

    /// The hook failed: 503, never an upgrade.
    pub fn hook_failed(self) -> Rejected {
        Rejected::http(Rejection::HookFailed)
    }
}

/// The request may be upgraded. The only way to build a server session.
///
/// A capability: fields are private and the only constructor is the handshake, so an
/// unauthorized session cannot exist.
#[must_use = "an accepted request should be upgraded and served"]
#[derive(Debug)]
pub struct Accepted {
    account: AccountId,
    channel: Channel,
    source: CredentialSource,
    echo: Option<&'static str>,
    resume: Option<ResumeRequest>,
}

impl Accepted {
    /// The authenticated account.
    pub fn account(&self) -> &AccountId {
        &self.account
    }
    /// The channel to serve.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
    /// The campaign, for the campaign channel.
    pub fn campaign(&self) -> Option<&CampaignId> {
        match &self.channel {
            Channel::Campaign(id) => Some(id),
            _ => None,
        }
    }
    /// Where the key came from.
    pub fn credential_source(&self) -> CredentialSource {
        self.source
    }

    /// The subprotocol the 101 must echo in `Sec-WebSocket-Protocol`: `Some("misar.v1")`
    /// when the client offered it (§2.12), else `None` (send no such header). Never the
    /// client's bearer entry.
    pub fn subprotocol(&self) -> Option<&'static str> {
        self.echo
    }

    /// What the client asked to resume from (§2.11): `None` when it did not opt in (it gets
    /// the plain §2.4 frames), `Some(New)` or `Some(From(position))` when it did (its first
    /// frame is then a `resume` frame and its events carry `"offset"`).
    pub fn resume(&self) -> Option<&ResumeRequest> {
        self.resume.as_ref()
    }

    /// Opts this connection in (or out) of resume, as if the request had said so. For
    /// drivers that carry the resume value another way (a custom transport); the handshake
    /// sets it from the request.
    pub fn with_resume(mut self, resume: Option<ResumeRequest>) -> Self {
        self.resume = resume;
        self
    }

    /// Test and fuzzing constructor: skips the decision. Not part of the public API: it
    /// exists only in this crate's own tests and in builds with `--cfg fuzzing` (what
    /// cargo-fuzz passes, and `fuzz/.cargo/config.toml` for its stable tests), never through
    /// a cargo feature, which any crate of a dependency graph could turn on.
    #[cfg(any(test, fuzzing))]
    #[doc(hidden)]
    pub fn for_tests(account: AccountId, channel: Channel, source: CredentialSource) -> Self {
        Self {
            account,
            channel,
            source,
            echo: None,
            resume: None,
        }
    }
}

#[cfg(test)]
mod tests;
