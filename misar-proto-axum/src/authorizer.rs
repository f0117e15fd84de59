//! The embedder's hooks (§2.2): which account a key belongs to, and whether an account owns a
//! campaign.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use misar_proto::auth::{AccountId, ApiKey};
use misar_proto::route::CampaignId;

/// Answers the two questions of the handshake. Called between the handshake's steps, before
/// any upgrade; an `Err` fails closed (HTTP 503, never an upgrade).
///
/// Implement it with `async fn`s:
///
/// ```
/// use misar_proto::auth::{AccountId, ApiKey};
/// use misar_proto::route::CampaignId;
/// use misar_proto_axum::{Authorizer, AuthorizerError};
///
/// struct Db;
///
/// impl Authorizer for Db {
///     async fn authenticate(&self, key: &ApiKey) -> Result<Option<AccountId>, AuthorizerError> {
///         // Look the key up (by a hash of `key.expose()`, or compare with `key.ct_eq_str`).
///         Ok(key.ct_eq_str("msk_example").then(|| AccountId::from("acct-1")))
///     }
///
///     async fn owns_campaign(
///         &self,
///         account: &AccountId,
///         campaign: &CampaignId,
///     ) -> Result<bool, AuthorizerError> {
///         Ok(account.as_str() == "acct-1" && campaign.as_str() == "spring-sale")
///     }
/// }
/// ```
pub trait Authorizer: Send + Sync + 'static {
    /// The account `key` belongs to; `Ok(None)` for a key nobody has.
    ///
    /// Compare keys in constant time ([`ApiKey::ct_eq_str`]) or look up a hash of the key.
    fn authenticate(
        &self,
        key: &ApiKey,
    ) -> impl Future<Output = Result<Option<AccountId>, AuthorizerError>> + Send;

    /// Whether `account` owns `campaign`. A campaign that does not exist must get `Ok(false)`,
    /// the same answer as one owned by another account (no existence oracle).
    fn owns_campaign(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
    ) -> impl Future<Output = Result<bool, AuthorizerError>> + Send;
}

impl<A: Authorizer> Authorizer for Arc<A> {
    fn authenticate(
        &self,
        key: &ApiKey,
    ) -> impl Future<Output = Result<Option<AccountId>, AuthorizerError>> + Send {
        (**self).authenticate(key)
    }

    fn owns_campaign(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
    ) -> impl Future<Output = Result<bool, AuthorizerError>> + Send {
        (**self).owns_campaign(account, campaign)
    }
}

/// A hook failed (e.g. its database is down). The request is refused with HTTP 503.
///
/// The adapter logs the error's `Display` text: never put a key in it.
#[derive(Debug, thiserror::Error)]
#[error("authorizer failed: {source}")]
pub struct AuthorizerError {
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl AuthorizerError {
    /// Wraps the cause (an error value, or a `String`/`&str` message).
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

/// An [`Authorizer`] over in-memory tables, for demos and tests.
///
/// Keys are fixed when it is built and compared in constant time, every stored key each time
/// (so neither the time of one comparison nor the number of comparisons depends on which
/// stored key matched). Campaign ownership can change while it serves
/// ([`grant_campaign`](Self::grant_campaign), [`remove_campaign`](Self::remove_campaign)).
///
/// ```
/// use misar_proto::auth::AccountId;
/// use misar_proto::route::CampaignId;
/// use misar_proto_axum::MemoryAuthorizer;
///
/// let authorizer = MemoryAuthorizer::new()
///     .with_key("msk_demo_alice", "alice")
///     .with_campaign("spring-sale", "alice");
/// authorizer.grant_campaign(CampaignId::new("summer-sale").unwrap(), AccountId::from("alice"));
/// assert_eq!(authorizer.campaign_count(), 2);
/// ```
#[derive(Debug, Default)]
pub struct MemoryAuthorizer {
    keys: Vec<(StoredKey, AccountId)>,
    campaigns: RwLock<HashMap<CampaignId, AccountId>>,
}

/// A stored key; its `Debug` form is redacted.
struct StoredKey(Box<str>);

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredKey(<redacted>)")
    }
}

impl MemoryAuthorizer {
    /// No keys, no campaigns.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key of `account`. A key that is not syntactically valid can never match (the
    /// handshake refuses it before asking), but is accepted here.
    pub fn with_key(mut self, key: impl Into<String>, account: impl Into<AccountId>) -> Self {
        self.keys
            .push((StoredKey(key.into().into_boxed_str()), account.into()));
        self
    }

    /// Adds a campaign owned by `account`. An id that is not a valid [`CampaignId`] is
    /// ignored: no request could name it.
    pub fn with_campaign(self, campaign: &str, account: impl Into<AccountId>) -> Self {
        if let Ok(campaign) = CampaignId::new(campaign) {
            self.grant_campaign(campaign, account.into());
        }
        self
    }

    /// Makes `account` the owner of `campaign` (replacing any previous owner).
    pub fn grant_campaign(&self, campaign: CampaignId, account: AccountId) {
        self.campaigns
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(campaign, account);
    }

    /// Forgets `campaign`; returns its owner if it had one.
    pub fn remove_campaign(&self, campaign: &CampaignId) -> Option<AccountId> {
        self.campaigns
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(campaign)
    }

    /// The owner of `campaign`.
    pub fn campaign_owner(&self, campaign: &CampaignId) -> Option<AccountId> {
        self.campaigns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(campaign)
            .cloned()
    }

    /// How many campaigns have an owner.
    pub fn campaign_count(&self) -> usize {
        self.campaigns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether some key belongs to `account`.
    pub fn has_account(&self, account: &str) -> bool {
        self.keys.iter().any(|(_, a)| a.as_str() == account)
    }

    /// The account of `key`, comparing against every stored key in constant time.
    pub fn lookup(&self, key: &ApiKey) -> Option<AccountId> {
        let mut found = None;
        for (stored, account) in &self.keys {
            // No early exit: every stored key is compared whatever matched before.
            if key.ct_eq_str(&stored.0) && found.is_none() {
                found = Some(account.clone());
            }
        }
        found
    }
}

impl Authorizer for MemoryAuthorizer {
    async fn authenticate(&self, key: &ApiKey) -> Result<Option<AccountId>, AuthorizerError> {
        Ok(self.lookup(key))
    }

    async fn owns_campaign(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
    ) -> Result<bool, AuthorizerError> {
        Ok(self.campaign_owner(campaign).as_ref() == Some(account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ApiKey {
        ApiKey::parse(s).unwrap()
    }

    #[test]
    fn lookup_finds_the_right_account() {
        let a = MemoryAuthorizer::new()
            .with_key("msk_a", "alice")
            .with_key("msk_b", "bob");
        assert_eq!(a.lookup(&key("msk_b")), Some(AccountId::from("bob")));
        assert_eq!(a.lookup(&key("msk_a")), Some(AccountId::from("alice")));
        assert_eq!(a.lookup(&key("msk_c")), None);
        assert_eq!(a.lookup(&key("msk_ab")), None);
    }

    #[test]
    fn ownership_changes() {
        let a = MemoryAuthorizer::new().with_campaign("c1", "alice");
        let c1 = CampaignId::new("c1").unwrap();
        assert_eq!(a.campaign_owner(&c1), Some(AccountId::from("alice")));
        a.grant_campaign(c1.clone(), AccountId::from("bob"));
        assert_eq!(a.campaign_owner(&c1), Some(AccountId::from("bob")));
        assert_eq!(a.remove_campaign(&c1), Some(AccountId::from("bob")));
        assert_eq!(a.campaign_count(), 0);
        // An invalid id is ignored rather than stored.
        let a = a.with_campaign("not valid!", "alice");
        assert_eq!(a.campaign_count(), 0);
    }

    #[test]
    fn debug_hides_keys() {
        let a = MemoryAuthorizer::new().with_key("msk_secret_value", "alice");
        let text = format!("{a:?}");
        assert!(!text.contains("msk_secret_value"), "{text}");
        assert!(text.contains("alice"), "{text}");
    }
}
