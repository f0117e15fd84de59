//! Authentication material (§2.2): the [`ApiKey`], the [`AccountId`] a key resolves to, and
//! credential extraction from a request's head.

mod credentials;
mod key;

pub use credentials::{
    BEARER_PROTOCOL_PREFIX, CredentialError, CredentialSource, Credentials, MalformedProtocols,
    OfferedProtocols, SUBPROTOCOL, extract_credentials, offered_protocols,
};
pub use key::{ApiKey, KEY_PREFIX, KeySyntaxError, MAX_KEY_BODY_LEN, Redacted, constant_time_eq};

use std::fmt;
use std::sync::Arc;

/// The account a key belongs to, as the embedder's key-check hook names it.
///
/// Cheap to clone (shared), so fan-out maps and sessions can hold it freely. Account ids are
/// not secrets and print as they are.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(Arc<str>);

impl AccountId {
    /// Wraps the embedder's account identifier.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({:?})", &*self.0)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AccountId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for AccountId {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}
