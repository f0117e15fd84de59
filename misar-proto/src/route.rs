//! Routing (§2.1): a request path under the mount prefix → a [`Channel`].
//!
//! Routing is decided before authentication, so an unknown path is a 404 whatever the
//! credentials.

use std::fmt;

use percent_encoding::percent_decode_str;

/// The default mount prefix.
pub const DEFAULT_PREFIX: &str = "/mail/ws";

/// Longest campaign id, in characters after percent-decoding.
pub const MAX_CAMPAIGN_ID_LEN: usize = 128;

/// A campaign id: 1–128 characters of `[A-Za-z0-9_-]` (UUIDs fit).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CampaignId(Box<str>);

/// Why a string is not a campaign id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignIdError {
    /// The id is empty.
    #[error("campaign id is empty")]
    Empty,
    /// The id is longer than 128 characters.
    #[error("campaign id is {len} bytes long; at most {MAX_CAMPAIGN_ID_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id holds a character outside `[A-Za-z0-9_-]`.
    #[error("campaign id holds a character outside [A-Za-z0-9_-] at byte {position}")]
    InvalidCharacter {
        /// Byte offset of the first offending character.
        position: usize,
    },
}

impl CampaignId {
    /// Validates a campaign id (already percent-decoded).
    pub fn new(id: &str) -> Result<Self, CampaignIdError> {
        Self::validate(id)?;
        Ok(Self(id.into()))
    }

    /// Like [`new`](Self::new), reusing the allocation of an owned string.
    pub(crate) fn from_string(id: String) -> Result<Self, CampaignIdError> {
        Self::validate(&id)?;
        Ok(Self(id.into_boxed_str()))
    }

    fn validate(id: &str) -> Result<(), CampaignIdError> {
        if id.is_empty() {
            return Err(CampaignIdError::Empty);
        }
        if id.len() > MAX_CAMPAIGN_ID_LEN {
            return Err(CampaignIdError::TooLong { len: id.len() });
        }
        if let Some(position) = id
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(CampaignIdError::InvalidCharacter { position });
        }
        Ok(())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for CampaignId {
    type Err = CampaignIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Debug for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CampaignId({:?})", &*self.0)
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for CampaignId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for CampaignId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for CampaignId {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl TryFrom<String> for CampaignId {
    type Error = CampaignIdError;
    /// Validates an owned string, keeping its allocation.
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::from_string(id)
    }
}

impl TryFrom<&str> for CampaignId {
    type Error = CampaignIdError;
    fn try_from(id: &str) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl AsRef<str> for CampaignId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The two channels of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Channel {
    /// `{prefix}/inbox`: the authenticated account's events.
    Inbox,
    /// `{prefix}/campaigns/{id}`: one campaign's delivery progress.
    Campaign(CampaignId),
}

impl Channel {
    /// Which kind of channel this is.
    pub fn kind(&self) -> crate::close::ChannelKind {
        match self {
            Channel::Inbox => crate::close::ChannelKind::Inbox,
            Channel::Campaign(_) => crate::close::ChannelKind::Campaign,
        }
    }

    /// The path of this channel under `prefix` (percent-encoding is never needed: campaign ids
    /// are URL-safe).
    pub fn path(&self, prefix: &str) -> String {
        let prefix = prefix.trim_end_matches('/');
        match self {
            Channel::Inbox => format!("{prefix}/inbox"),
            Channel::Campaign(id) => format!("{prefix}/campaigns/{id}"),
        }
    }
}

/// Why a path is not a channel: each is a 404.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotFound {
    /// The path is not under the mount prefix.
    #[error("path is not under the mount prefix")]
    OutsidePrefix,
    /// Under the prefix, but neither `/inbox` nor `/campaigns/{id}`.
    #[error("no channel at this path")]
    UnknownChannel,
    /// `/campaigns/{id}` with an id that is not percent-decodable UTF-8.
    #[error("campaign id is not valid percent-encoded UTF-8")]
    CampaignIdEncoding,
    /// `/campaigns/{id}` with an id that fails validation.
    #[error("invalid campaign id: {0}")]
    CampaignId(#[from] CampaignIdError),
}

/// Where the channels are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routes {
    prefix: String,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Routes {
    /// Channels under `prefix` (`""` or `"/"` mounts them at the root). A trailing `/` is
    /// ignored and a missing leading `/` is added.
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        Self { prefix }
    }

    /// The normalized prefix (no trailing `/`; empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Resolves a request path (without the query) to a channel.
    ///
    /// The prefix and the fixed segments are matched literally; only the campaign id is
    /// percent-decoded (so `%2F` in an id is a character of the id, refused by validation, and
    /// never a path separator). A trailing slash is not accepted.
    ///
    /// ```
    /// use misar_proto::route::{Channel, Routes, NotFound};
    /// let routes = Routes::default();
    /// assert_eq!(routes.resolve("/mail/ws/inbox"), Ok(Channel::Inbox));
    /// assert!(matches!(routes.resolve("/mail/ws/campaigns/abc-123"), Ok(Channel::Campaign(_))));
    /// assert_eq!(routes.resolve("/mail/ws/other"), Err(NotFound::UnknownChannel));
    /// ```
    pub fn resolve(&self, path: &str) -> Result<Channel, NotFound> {
        let rest = path
            .strip_prefix(self.prefix.as_str())
            .ok_or(NotFound::OutsidePrefix)?;
        let rest = rest.strip_prefix('/').ok_or(if rest.is_empty() {
            NotFound::UnknownChannel
        } else {
            NotFound::OutsidePrefix
        })?;
        if rest == "inbox" {
            return Ok(Channel::Inbox);
        }
        let raw_id = rest
            .strip_prefix("campaigns/")
            .ok_or(NotFound::UnknownChannel)?;
        if raw_id.contains('/') {
            return Err(NotFound::UnknownChannel);
        }
        // Bound the work before decoding: a valid id is at most 128 bytes, and each decoded
        // byte takes at most three encoded ones.
        if raw_id.len() > MAX_CAMPAIGN_ID_LEN * 3 {
            return Err(CampaignIdError::TooLong { len: raw_id.len() }.into());
        }
        let decoded = percent_decode_str(raw_id)
            .decode_utf8()
            .map_err(|_| NotFound::CampaignIdEncoding)?;
        Ok(Channel::Campaign(CampaignId::new(&decoded)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(id: &str) -> Channel {
        Channel::Campaign(CampaignId::new(id).unwrap())
    }

    #[test]
    fn inbox_and_campaign_resolve_under_default_prefix() {
        let r = Routes::default();
        assert_eq!(r.resolve("/mail/ws/inbox"), Ok(Channel::Inbox));
        assert_eq!(
            r.resolve("/mail/ws/campaigns/11111111-1111-4111-8111-111111111111"),
            Ok(campaign("11111111-1111-4111-8111-111111111111"))
        );
    }

    #[test]
    fn campaign_id_is_percent_decoded() {
        let r = Routes::default();
        assert_eq!(r.resolve("/mail/ws/campaigns/ab%2Dc"), Ok(campaign("ab-c")));
        assert_eq!(r.resolve("/mail/ws/campaigns/%61"), Ok(campaign("a")));
    }

    #[test]
    fn encoded_slash_or_dot_in_id_is_not_found() {
        let r = Routes::default();
        assert_eq!(
            r.resolve("/mail/ws/campaigns/a%2Fb"),
            Err(NotFound::CampaignId(CampaignIdError::InvalidCharacter {
                position: 1
            }))
        );
        assert!(r.resolve("/mail/ws/campaigns/a.b").is_err());
        assert!(r.resolve("/mail/ws/campaigns/%2e%2e").is_err());
    }

    #[test]
    fn invalid_percent_encoding_is_not_found() {
        let r = Routes::default();
        assert_eq!(
            r.resolve("/mail/ws/campaigns/%FF"),
            Err(NotFound::CampaignIdEncoding)
        );
        // A lone '%' decodes to itself and is then refused by validation.
        assert!(matches!(
            r.resolve("/mail/ws/campaigns/%"),
            Err(NotFound::CampaignId(_))
        ));
    }

    #[test]
    fn id_length_bounds() {
        let r = Routes::default();
        let max = "a".repeat(128);
        assert_eq!(
            r.resolve(&format!("/mail/ws/campaigns/{max}")),
            Ok(campaign(&max))
        );
        assert_eq!(
            r.resolve(&format!("/mail/ws/campaigns/{max}a")),
            Err(NotFound::CampaignId(CampaignIdError::TooLong { len: 129 }))
        );
        assert_eq!(
            r.resolve("/mail/ws/campaigns/"),
            Err(NotFound::CampaignId(CampaignIdError::Empty))
        );
        let huge = "%41".repeat(10_000);
        assert!(matches!(
            r.resolve(&format!("/mail/ws/campaigns/{huge}")),
            Err(NotFound::CampaignId(CampaignIdError::TooLong { .. }))
        ));
    }

    #[test]
    fn other_paths_are_not_found() {
        let r = Routes::default();
        for path in [
            "/mail/ws",
            "/mail/ws/",
            "/mail/ws/inbox/",
            "/mail/ws/inbox/x",
            "/mail/ws/campaigns",
            "/mail/ws/campaigns/a/b",
            "/mail/ws/campaigns/a/",
            "/mail/ws/INBOX",
            "/mail/ws/%69nbox",
        ] {
            assert!(r.resolve(path).is_err(), "{path} should be 404");
        }
        assert_eq!(r.resolve("/other/inbox"), Err(NotFound::OutsidePrefix));
        assert_eq!(r.resolve("/mail/wsx/inbox"), Err(NotFound::OutsidePrefix));
    }

    #[test]
    fn custom_and_root_prefixes() {
        let r = Routes::new("/api/v2/");
        assert_eq!(r.prefix(), "/api/v2");
        assert_eq!(r.resolve("/api/v2/inbox"), Ok(Channel::Inbox));
        assert!(r.resolve("/mail/ws/inbox").is_err());
        let root = Routes::new("/");
        assert_eq!(root.resolve("/inbox"), Ok(Channel::Inbox));
        assert_eq!(root.resolve("/campaigns/x"), Ok(campaign("x")));
    }

    #[test]
    fn campaign_id_conversions_and_comparisons() {
        let id = CampaignId::try_from(String::from("c-1")).unwrap();
        assert_eq!(CampaignId::try_from("c-1"), Ok(id.clone()));
        let owned = String::from("c-1");
        assert!(id == "c-1" && id == *"c-1" && id == owned);
        assert!(id != "c-2");
        assert_eq!(
            CampaignId::try_from(String::from("c 1")),
            Err(CampaignIdError::InvalidCharacter { position: 1 })
        );
        assert_eq!(CampaignId::try_from(""), Err(CampaignIdError::Empty));
    }

    #[test]
    fn channel_path_round_trips() {
        let r = Routes::new("rt");
        for ch in [Channel::Inbox, campaign("abc_DEF-1")] {
            assert_eq!(r.resolve(&ch.path(r.prefix())), Ok(ch));
        }
    }
}
