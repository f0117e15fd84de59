//! [`Registry`]: who is connected, the limits (§2.8), shutdown and revocation (§2.9, §2.13).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::auth::AccountId;
use crate::close::CloseCode;
use crate::route::CampaignId;

use super::{ConnectionId, StreamKey, StreamsConfig};

/// Taken before a handshake's hooks run ([`Registry::mark`]) and handed to
/// [`Registry::admit`] after they answered: a revocation of the account or the campaign in
/// between is not lost (§2.13), the late subscriber is closed with 4401/4403 at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevocationMark {
    generation: u64,
    /// The mark is worth something only with the registry that issued it.
    registry: u64,
}

impl RevocationMark {
    /// The revocation generation the mark was taken at.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Why a connection was not admitted (answer before the upgrade).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The account holds its maximum of connections (HTTP 429).
    #[error("too many connections for this account (limit {limit})")]
    TooManyForAccount {
        /// The limit.
        limit: usize,
    },
    /// The server holds its maximum of connections (HTTP 503).
    #[error("too many connections (limit {limit})")]
    TooManyConnections {
        /// The limit.
        limit: usize,
        /// Suggested `Retry-After`.
        retry_after: Duration,
    },
    /// The server is shutting down (HTTP 503).
    #[error("the server is shutting down")]
    ShuttingDown {
        /// Suggested `Retry-After`.
        retry_after: Duration,
    },
    /// The handshake's hooks ran so long ago (before [`StreamsConfig::revocation_memory`]) that
    /// a revocation since then can no longer be ruled out (HTTP 503: the client retries and
    /// runs the hooks again).
    #[error("the handshake is too old to be admitted; retry")]
    StaleHandshake {
        /// Suggested `Retry-After`.
        retry_after: Duration,
    },
    /// A channel this version does not serve.
    #[error("unsupported channel")]
    UnsupportedChannel,
}

impl SubscribeError {
    /// The `Retry-After` to send with the refusal, when there is one (429 has none).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SubscribeError::TooManyConnections { retry_after, .. }
            | SubscribeError::ShuttingDown { retry_after }
            | SubscribeError::StaleHandshake { retry_after } => Some(*retry_after),
            SubscribeError::TooManyForAccount { .. } | SubscribeError::UnsupportedChannel => None,
        }
    }
}

/// What [`Registry::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Admission {
    /// The connection's id, unique in this registry.
    pub id: ConnectionId,
    /// A revocation came after the handshake's mark: serve nothing, close at once with this
    /// code (4401 for the account, 4403 for the campaign).
    pub revoked: Option<CloseCode>,
}

/// A revocation remembered for handshakes in flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Revoked {
    Account(AccountId),
    Campaign(CampaignId),
}

/// Who is connected, per account; the limits; shutdown; recent revocations.
///
/// `C` is the caller's handle to a connection (see [`Stream`](super::Stream)). Every method
/// is O(1) (amortized) except those that return the connections of an account or of every
/// account, and [`remove`](Self::remove), which searches the account's connections (at most
/// `max_connections_per_account`; a position index would cost every connection more memory
/// than the search costs a disconnect).
#[derive(Debug)]
pub struct Registry<C> {
    max_per_account: usize,
    max_total: usize,
    retry_after: Duration,
    revocation_memory: Duration,
    max_revocations: usize,
    accounts: HashMap<AccountId, Vec<(ConnectionId, C)>>,
    total: usize,
    next_id: u64,
    shutting_down: bool,
    /// Identifies this registry's marks.
    id: u64,
    /// Incremented by every revocation.
    generation: u64,
    /// Latest revocation generation per account or campaign, for those within the memory.
    revoked: HashMap<Revoked, u64>,
    /// The same entries, oldest first, with when they happened (for pruning).
    revoked_order: VecDeque<(Instant, u64, Revoked)>,
    /// Revocations at or below this generation were forgotten: a mark below it is too old to
    /// be judged.
    horizon: u64,
}

impl<C> Registry<C> {
    /// An empty registry with `config`'s limits.
    pub fn new(config: &StreamsConfig) -> Self {
        Self::with_id(config, 0)
    }

    /// An empty registry whose marks carry `id` (a registry refuses marks of another id as
    /// stale, so a mark cannot be carried from one hub to another by mistake).
    pub fn with_id(config: &StreamsConfig, id: u64) -> Self {
        Self {
            max_per_account: config.max_connections_per_account,
            max_total: config.max_connections,
            retry_after: config.retry_after,
            revocation_memory: config.revocation_memory,
            max_revocations: config.max_remembered_revocations.max(1),
            accounts: HashMap::new(),
            total: 0,
            next_id: 0,
            shutting_down: false,
            id,
            generation: 0,
            revoked: HashMap::new(),
            revoked_order: VecDeque::new(),
            horizon: 0,
        }
    }

    // ----- getters -----

    /// Connections admitted and not removed.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Connections `account` holds.
    pub fn account_connections(&self, account: &AccountId) -> usize {
        self.accounts.get(account).map_or(0, Vec::len)
    }

    /// Whether [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Every connection, in no particular order.
    pub fn connections(&self) -> impl Iterator<Item = &C> {
        self.accounts.values().flatten().map(|(_, c)| c)
    }

    /// Revocations remembered now (bounded by [`StreamsConfig::max_remembered_revocations`]).
    pub fn remembered_revocations(&self) -> usize {
        self.revoked.len()
    }

    // ----- decisions -----

    /// A mark to take before a handshake's hooks run.
    pub fn mark(&self) -> RevocationMark {
        RevocationMark {
            generation: self.generation,
            registry: self.id,
        }
    }

    /// Admits a connection of `account` to `stream` whose hooks ran after `mark`, or refuses
    /// it (shutdown, then the account's limit, then the total, then a mark too old to judge).
    /// An admitted connection counts until [`remove`](Self::remove); if the account (or, for
    /// a campaign, the campaign) was revoked after `mark`, it is admitted to be closed at once
    /// with [`Admission::revoked`].
    pub fn admit(
        &mut self,
        account: &AccountId,
        stream: &StreamKey,
        mark: RevocationMark,
        connection: C,
        now: Instant,
    ) -> Result<Admission, SubscribeError> {
        self.prune(now);
        if self.shutting_down {
            return Err(SubscribeError::ShuttingDown {
                retry_after: self.retry_after,
            });
        }
        if self.account_connections(account) >= self.max_per_account {
            return Err(SubscribeError::TooManyForAccount {
                limit: self.max_per_account,
            });
        }
        if self.total >= self.max_total {
            return Err(SubscribeError::TooManyConnections {
                limit: self.max_total,
                retry_after: self.retry_after,
            });
        }
        let revoked = self.revoked_since(mark, account, stream)?;
        let id = ConnectionId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.accounts
            .entry(account.clone())
            .or_default()
            .push((id, connection));
        self.total = self.total.saturating_add(1);
        Ok(Admission { id, revoked })
    }

    /// Whether `account` or `stream`'s campaign was revoked after `mark`: `Some(4401)` for the
    /// account (which wins), `Some(4403)` for the campaign. A caller that joins the stream
    /// after [`admit`](Self::admit) under a separate lock asks again afterwards, so that a
    /// campaign revocation landing between the two is not missed.
    pub fn revoked_since(
        &self,
        mark: RevocationMark,
        account: &AccountId,
        stream: &StreamKey,
    ) -> Result<Option<CloseCode>, SubscribeError> {
        if mark.registry != self.id || mark.generation > self.generation {
            // Not one of ours: nothing can be ruled out.
            return Err(SubscribeError::StaleHandshake {
                retry_after: self.retry_after,
            });
        }
        if mark.generation == self.generation {
            return Ok(None); // nothing was revoked since (the common case: no lookup)
        }
        if mark.generation < self.horizon {
            return Err(SubscribeError::StaleHandshake {
                retry_after: self.retry_after,
            });
        }
        let after = |key: Revoked| {
            self.revoked
                .get(&key)
                .is_some_and(|&generation| generation > mark.generation)
        };
        if after(Revoked::Account(account.clone())) {
            return Ok(Some(CloseCode::Unauthorized));
        }
        if let StreamKey::Campaign(campaign) = stream {
            if after(Revoked::Campaign(campaign.clone())) {
                return Ok(Some(CloseCode::Forbidden));
            }
        }
        Ok(None)
    }

    /// Removes an admitted connection; returns its handle (`None` if it was not admitted, or
    /// already removed).
    pub fn remove(&mut self, account: &AccountId, id: ConnectionId) -> Option<C> {
        let connections = self.accounts.get_mut(account)?;
        let position = connections.iter().position(|(found, _)| *found == id)?;
        let (_, connection) = connections.swap_remove(position);
        if connections.is_empty() {
            self.accounts.remove(account);
        }
        self.total = self.total.saturating_sub(1);
        Some(connection)
    }

    /// Revokes `account` (its key): remembers it for handshakes in flight and returns its
    /// connections, to close with 4401.
    pub fn revoke_account(&mut self, account: &AccountId, now: Instant) -> &[(ConnectionId, C)] {
        self.remember(Revoked::Account(account.clone()), now);
        self.accounts.get(account).map_or(&[], Vec::as_slice)
    }

    /// Revokes `campaign` (its ownership changed): remembers it for handshakes in flight. The
    /// connections to close with 4403 are the campaign stream's ([`Stream::revoke`](super::Stream::revoke)).
    pub fn revoke_campaign(&mut self, campaign: &CampaignId, now: Instant) {
        self.remember(Revoked::Campaign(campaign.clone()), now);
    }

    /// Graceful shutdown: refuses every later admission and returns every connection, to close
    /// with 1001.
    pub fn begin_shutdown(&mut self) -> impl Iterator<Item = &C> {
        self.shutting_down = true;
        self.connections()
    }

    fn remember(&mut self, key: Revoked, now: Instant) {
        self.prune(now);
        self.generation = self.generation.saturating_add(1);
        let generation = self.generation;
        self.revoked.insert(key.clone(), generation);
        self.revoked_order.push_back((now, generation, key));
        while self.revoked_order.len() > self.max_revocations {
            self.forget_oldest();
        }
    }

    /// Forgets revocations older than the memory.
    fn prune(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.revoked_order.front() {
            if now.saturating_duration_since(*at) <= self.revocation_memory {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((_, generation, key)) = self.revoked_order.pop_front() else {
            return;
        };
        // A later revocation of the same key keeps its own (newer) entry.
        if self.revoked.get(&key) == Some(&generation) {
            self.revoked.remove(&key);
        }
        self.horizon = self.horizon.max(generation);
        if self.revoked_order.is_empty() {
            // Give a burst's memory back.
            self.revoked_order = VecDeque::new();
        }
    }
}
