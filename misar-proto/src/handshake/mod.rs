//! The pre-upgrade decision (§2.1–§2.3) as states the caller must consume.
//!
//! SKELETON: the public shape is fixed here; bodies arrive with issue 2.
//!
//! ```text
//! start(config, request head)
//!   ├─ Rejected (404 route, 405 method, 403 origin, 403/4401 credentials)
//!   └─ NeedsAuthentication(key) ── .authenticated(account) ─┬─ inbox ──────────────→ Accepted
//!        ├─ .unknown_key() → Rejected (403/4401)             └─ campaign → NeedsOwnership
//!        └─ .hook_failed() → Rejected (503)                       ├─ .grant() → Accepted
//!                                                                  ├─ .deny()  → Rejected (403/4403)
//!                                                                  └─ .hook_failed() → Rejected (503)
//! ```

use crate::auth::{AccountId, ApiKey, CredentialSource};
use crate::close::CloseCode;
use crate::route::{CampaignId, Channel, Routes};

/// How an unauthenticated or unauthorized request is refused (§2.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionStyle {
    /// HTTP 403 before the handshake completes (the default, as the protocol source says).
    #[default]
    Http,
    /// Upgrade, then close at once with 4401 or 4403 (browsers can read a close code, not the
    /// status of a failed upgrade).
    CloseAfterUpgrade,
    /// `Http` for header-authenticated clients, `CloseAfterUpgrade` for `?token=` clients.
    Auto,
}

/// Configuration of the pre-upgrade decision.
#[derive(Clone, Debug, Default)]
pub struct HandshakeConfig {
    /// Where the channels are mounted.
    pub routes: Routes,
    /// How auth failures are refused.
    pub rejection_style: RejectionStyle,
    /// When `Some`, only requests whose `Origin` is in the list are accepted (a request without
    /// `Origin`, i.e. not from a browser, is allowed). Compared ASCII-case-insensitively.
    pub allowed_origins: Option<Vec<String>>,
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
pub fn start(_config: &HandshakeConfig, _request: &http::request::Parts) -> Step {
    todo!("issue 2")
}

/// The request carried a well-formed key; the embedder's hook must resolve it.
#[must_use = "answer with .authenticated(), .unknown_key() or .hook_failed()"]
#[derive(Debug)]
pub struct NeedsAuthentication {
    _private: (),
}

/// The account is known; the embedder's hook must say whether it owns the campaign.
#[must_use = "answer with .grant(), .deny() or .hook_failed()"]
#[derive(Debug)]
pub struct NeedsOwnership {
    _private: (),
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

    /// Test and fuzzing constructor: skips the decision. Not part of the public API.
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn for_tests(account: AccountId, channel: Channel, source: CredentialSource) -> Self {
        Self {
            account,
            channel,
            source,
        }
    }
}

/// The request is refused.
#[must_use = "a rejection must be sent: see Rejected::action"]
#[derive(Debug)]
pub struct Rejected {
    _private: (),
}

/// What a rejection asks the adapter to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum RejectAction {
    /// Send this response; do not upgrade.
    Respond(http::Response<bytes::Bytes>),
    /// Upgrade, then run a session that only closes with this code
    /// ([`CloseAfterUpgrade`] builds it).
    UpgradeThenClose(CloseAfterUpgrade),
}

/// A rejection to deliver after the upgrade: the close code, and nothing else.
#[derive(Debug)]
pub struct CloseAfterUpgrade {
    code: CloseCode,
}

impl CloseAfterUpgrade {
    /// 4401 or 4403.
    pub fn code(&self) -> CloseCode {
        self.code
    }
}

#[allow(dead_code)]
fn _keep(_: ApiKey) {}
