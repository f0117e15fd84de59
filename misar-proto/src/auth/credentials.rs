//! Credential extraction from a request head (§2.2). TO BE WRITTEN (issue 2).

use super::ApiKey;

/// Where the key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// `Authorization: Bearer <key>`.
    Header,
    /// `?token=<key>`.
    Query,
}

/// A key and where it came from. Both places may carry the same key; the source is then
/// [`CredentialSource::Header`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The key.
    pub key: ApiKey,
    /// Where it came from.
    pub source: CredentialSource,
}

/// Why a request carries no usable credentials. Never includes any part of a key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// Placeholder until issue 2 lands.
    #[error("missing credentials")]
    Missing,
}

/// Extracts the credentials of a request head.
pub fn extract_credentials(_parts: &http::request::Parts) -> Result<Credentials, CredentialError> {
    todo!("issue 2")
}
