//! Redis names: one pub/sub channel per stream, one key per campaign for the latest event, one
//! channel for revocations.
//!
//! ```text
//! {prefix}:inbox:{account}     channel: an account's inbox events (message = the event's JSON)
//! {prefix}:campaign:{id}       channel: a campaign's events        (message = the event's JSON)
//! {prefix}:last:{id}           key:     the campaign's latest progress / terminal event (TTL)
//! {prefix}:done:{id}           key:     set once the campaign's terminal event was published (TTL)
//! {prefix}:revoke              channel: "account:{account}" or "campaign:{id}"
//! ```
//!
//! The channel carries the stream key, so a message is the event's bytes and nothing else: no
//! framing to parse, and the bytes a node receives are the bytes its clients get.

use misar_proto::auth::AccountId;
use misar_proto::route::CampaignId;

use crate::hub::{Revocation, StreamKey};

/// What a received channel name stands for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// A stream's events.
    Stream(StreamKey),
    /// The revocation channel.
    Revoke,
}

/// The names under one prefix.
#[derive(Debug)]
pub(super) struct Names {
    inbox: Vec<u8>,
    campaign: Vec<u8>,
    last: Vec<u8>,
    done: Vec<u8>,
    revoke: Vec<u8>,
}

const REVOKE_ACCOUNT: &[u8] = b"account:";
const REVOKE_CAMPAIGN: &[u8] = b"campaign:";

impl Names {
    pub(super) fn new(prefix: &str) -> Self {
        let with = |suffix: &str| format!("{prefix}:{suffix}").into_bytes();
        Self {
            inbox: with("inbox:"),
            campaign: with("campaign:"),
            last: with("last:"),
            done: with("done:"),
            revoke: with("revoke"),
        }
    }

    /// The channel of `stream`.
    pub(super) fn channel(&self, stream: &StreamKey) -> Vec<u8> {
        match stream {
            StreamKey::Inbox(account) => concat(&self.inbox, account.as_str()),
            StreamKey::Campaign(campaign) => concat(&self.campaign, campaign.as_str()),
        }
    }

    /// The key holding `campaign`'s latest `progress` or terminal event.
    pub(super) fn last(&self, campaign: &CampaignId) -> Vec<u8> {
        concat(&self.last, campaign.as_str())
    }

    /// The key marking `campaign` finished (its terminal event was published).
    pub(super) fn done(&self, campaign: &CampaignId) -> Vec<u8> {
        concat(&self.done, campaign.as_str())
    }

    /// The revocation channel.
    pub(super) fn revoke(&self) -> &[u8] {
        &self.revoke
    }

    /// What a channel a message came on stands for; `None` for a name that is not ours or a
    /// stream key that does not parse (an account that is not UTF-8, an invalid campaign id).
    pub(super) fn parse(&self, channel: &[u8]) -> Option<Target> {
        if channel == self.revoke.as_slice() {
            return Some(Target::Revoke);
        }
        if let Some(account) = channel.strip_prefix(self.inbox.as_slice()) {
            let account = std::str::from_utf8(account).ok()?;
            return Some(Target::Stream(StreamKey::Inbox(AccountId::new(account))));
        }
        let campaign = channel.strip_prefix(self.campaign.as_slice())?;
        let campaign = CampaignId::new(std::str::from_utf8(campaign).ok()?).ok()?;
        Some(Target::Stream(StreamKey::Campaign(campaign)))
    }
}

fn concat(prefix: &[u8], rest: &str) -> Vec<u8> {
    let mut name = Vec::with_capacity(prefix.len().saturating_add(rest.len()));
    name.extend_from_slice(prefix);
    name.extend_from_slice(rest.as_bytes());
    name
}

/// The message announcing `revocation` on the revocation channel.
pub(super) fn encode_revocation(revocation: &Revocation) -> Vec<u8> {
    match revocation {
        Revocation::Account(account) => concat(REVOKE_ACCOUNT, account.as_str()),
        Revocation::Campaign(campaign) => concat(REVOKE_CAMPAIGN, campaign.as_str()),
    }
}

/// The revocation a message on the revocation channel announces.
pub(super) fn decode_revocation(message: &[u8]) -> Option<Revocation> {
    if let Some(account) = message.strip_prefix(REVOKE_ACCOUNT) {
        let account = std::str::from_utf8(account).ok()?;
        return Some(Revocation::Account(AccountId::new(account)));
    }
    let campaign = message.strip_prefix(REVOKE_CAMPAIGN)?;
    let campaign = CampaignId::new(std::str::from_utf8(campaign).ok()?).ok()?;
    Some(Revocation::Campaign(campaign))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(id: &str) -> CampaignId {
        CampaignId::new(id).unwrap()
    }

    #[test]
    fn channels_round_trip() {
        let names = Names::new("misar");
        for stream in [
            StreamKey::Inbox(AccountId::new("acct-1")),
            // Anything an embedder calls an account, separators included.
            StreamKey::Inbox(AccountId::new("a:b:campaign:c")),
            StreamKey::Inbox(AccountId::new("")),
            StreamKey::Campaign(campaign("c_42-x")),
        ] {
            let channel = names.channel(&stream);
            assert_eq!(names.parse(&channel), Some(Target::Stream(stream)));
        }
        assert_eq!(
            names.channel(&StreamKey::Inbox(AccountId::new("alice"))),
            b"misar:inbox:alice"
        );
        assert_eq!(
            names.channel(&StreamKey::Campaign(campaign("c1"))),
            b"misar:campaign:c1"
        );
        assert_eq!(names.last(&campaign("c1")), b"misar:last:c1");
        assert_eq!(names.parse(b"misar:revoke"), Some(Target::Revoke));
    }

    #[test]
    fn foreign_and_invalid_names_are_refused() {
        let names = Names::new("misar");
        for channel in [
            &b"other:inbox:alice"[..],
            b"misar:inbox",
            b"misar:campaign:",
            b"misar:campaign:has space",
            b"misar:inbox:\xff",
            b"misar:revoke:x",
            b"misar:last:c1",
        ] {
            assert_eq!(names.parse(channel), None, "{channel:?}");
        }
        // Another prefix is another deployment.
        let other = Names::new("staging");
        assert_eq!(
            other.parse(&names.channel(&StreamKey::Campaign(campaign("c1")))),
            None
        );
    }

    #[test]
    fn revocations_round_trip() {
        for revocation in [
            Revocation::Account(AccountId::new("alice")),
            Revocation::Account(AccountId::new("campaign:c1")),
            Revocation::Campaign(campaign("c1")),
        ] {
            assert_eq!(
                decode_revocation(&encode_revocation(&revocation)),
                Some(revocation)
            );
        }
        assert_eq!(decode_revocation(b"campaign:not valid"), None);
        assert_eq!(decode_revocation(b"everyone"), None);
        assert_eq!(decode_revocation(b"account:\xff"), None);
    }
}
