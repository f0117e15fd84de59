//! Redis names: one pub/sub channel per stream, one key per campaign for the latest event, one
//! channel for revocations, and per stream the §2.11 bookkeeping (offset counter and epoch,
//! history).
//!
//! ```text
//! {prefix}:{inbox:<account>}            channel: an account's inbox events (message: framed)
//! {prefix}:{campaign:<id>}              channel: a campaign's events        (message: framed)
//! {prefix}:last:{campaign:<id>}         key:     the campaign's latest progress / terminal
//!                                                event, framed (TTL)
//! {prefix}:done:{campaign:<id>}         key:     set once the campaign's terminal event was
//!                                                published (TTL)
//! {prefix}:meta:{inbox:<account>}       hash:    e = the stream's epoch, o = its latest offset
//! {prefix}:meta:{campaign:<id>}                  (TTL)
//! {prefix}:history:{inbox:<account>}    stream:  the last events, entry id `<offset>-0`,
//! {prefix}:history:{campaign:<id>}               fields t (Redis time, ms) and d (the JSON)
//! {prefix}:revoke                       channel: "account:{account}" or "campaign:{id}"
//! ```
//!
//! The braces are literal: they are Redis Cluster's **hash tag**. Every name of one stream
//! carries the same `{<kind>:<id>}` after a prefix without braces (checked at connect), so
//! Redis hashes the same bytes for all of them (up to the first `}`, whatever the id holds)
//! and one stream's channel, history and offsets sit in one slot, on one master: the publish
//! script touches them in one atomic step, and its `SPUBLISH` lands where the node's
//! `SSUBSCRIBE` is. On a single Redis the braces are just characters.
//!
//! The channel carries the stream key; a message carries the event's position and its JSON:
//! `<epoch>:<offset>\n<json>` (the position exactly as §2.11 writes it, one newline, then the
//! bytes the node's clients get, untouched). [`parse_message`] refuses anything else.

use misar_proto::auth::AccountId;
use misar_proto::resume::Position;
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
    /// `{prefix}:`.
    base: Vec<u8>,
    revoke: Vec<u8>,
}

const REVOKE_ACCOUNT: &[u8] = b"account:";
const REVOKE_CAMPAIGN: &[u8] = b"campaign:";

const INBOX_TAG: &[u8] = b"{inbox:";
const CAMPAIGN_TAG: &[u8] = b"{campaign:";

impl Names {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            base: format!("{prefix}:").into_bytes(),
            revoke: format!("{prefix}:revoke").into_bytes(),
        }
    }

    /// `{prefix}:{kind}{<stream tag>}`.
    fn name(&self, kind: &[u8], stream: &StreamKey) -> Vec<u8> {
        match stream {
            StreamKey::Inbox(account) => self.tagged(kind, INBOX_TAG, account.as_str()),
            StreamKey::Campaign(campaign) => self.tagged(kind, CAMPAIGN_TAG, campaign.as_str()),
        }
    }

    /// `{prefix}:{kind}{tag}{id}}`: the one place a stream's names are built.
    fn tagged(&self, kind: &[u8], tag: &[u8], id: &str) -> Vec<u8> {
        let mut name = Vec::with_capacity(self.base.len() + kind.len() + tag.len() + id.len() + 1);
        name.extend_from_slice(&self.base);
        name.extend_from_slice(kind);
        name.extend_from_slice(tag);
        name.extend_from_slice(id.as_bytes());
        name.push(b'}');
        name
    }

    /// The channel of `stream`.
    pub(super) fn channel(&self, stream: &StreamKey) -> Vec<u8> {
        self.name(b"", stream)
    }

    /// The key holding `campaign`'s latest `progress` or terminal event.
    pub(super) fn last(&self, campaign: &CampaignId) -> Vec<u8> {
        self.tagged(b"last:", CAMPAIGN_TAG, campaign.as_str())
    }

    /// The key marking `campaign` finished (its terminal event was published).
    pub(super) fn done(&self, campaign: &CampaignId) -> Vec<u8> {
        self.tagged(b"done:", CAMPAIGN_TAG, campaign.as_str())
    }

    /// The hash holding `stream`'s epoch (`e`) and latest offset (`o`).
    pub(super) fn meta(&self, stream: &StreamKey) -> Vec<u8> {
        self.name(b"meta:", stream)
    }

    /// The Redis Stream holding `stream`'s history.
    pub(super) fn history(&self, stream: &StreamKey) -> Vec<u8> {
        self.name(b"history:", stream)
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
        let tagged = channel.strip_prefix(self.base.as_slice())?;
        if let Some(account) = tagged.strip_prefix(INBOX_TAG) {
            let account = std::str::from_utf8(account.strip_suffix(b"}")?).ok()?;
            return Some(Target::Stream(StreamKey::Inbox(AccountId::new(account))));
        }
        let campaign = tagged.strip_prefix(CAMPAIGN_TAG)?.strip_suffix(b"}")?;
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

/// The longest position line of a message: a 32-character epoch, `:`, a u64.
const MAX_POSITION_LEN: usize = misar_proto::resume::MAX_EPOCH_LEN + 1 + 20;

/// Splits a stream message, `<epoch>:<offset>\n<json>`, into the event's position and the
/// byte index where its JSON starts; `None` for anything else (no newline within the
/// longest position, a position §2.11 would refuse, offset 0, nothing after the newline).
/// Never panics.
pub(super) fn parse_message(message: &[u8]) -> Option<(Position, usize)> {
    let head = &message[..message.len().min(MAX_POSITION_LEN + 1)];
    let newline = head.iter().position(|&b| b == b'\n')?;
    let position = std::str::from_utf8(&message[..newline]).ok()?;
    let position = Position::parse(position).ok()?;
    let start = newline + 1;
    (position.offset > 0 && start < message.len()).then_some((position, start))
}

/// The events of a message's body (what follows the position line): one per line, in
/// offset order, the first at the position's offset. An event's JSON never holds a raw
/// newline (JSON allows one only as whitespace, and the publishing side sends the core's
/// compact encoding, [`EncodedEvent`](misar_proto::event::EncodedEvent)), so the split is
/// exact. Never panics; an empty line is an (invalid)
/// empty event, refused by the validation after it.
pub(super) fn events_of(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n')
}

/// A stream message as the publish script builds it (for tests and foreign publishers).
#[cfg(test)]
pub(super) fn frame_message(position: &Position, json: &[u8]) -> Vec<u8> {
    let mut message = format!("{position}\n").into_bytes();
    message.extend_from_slice(json);
    message
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
            b"misar:{inbox:alice}"
        );
        assert_eq!(
            names.channel(&StreamKey::Campaign(campaign("c1"))),
            b"misar:{campaign:c1}"
        );
        assert_eq!(names.last(&campaign("c1")), b"misar:last:{campaign:c1}");
        assert_eq!(names.parse(b"misar:revoke"), Some(Target::Revoke));
    }

    #[test]
    fn foreign_and_invalid_names_are_refused() {
        let names = Names::new("misar");
        for channel in [
            &b"other:{inbox:alice}"[..],
            b"misar:inbox:alice",
            b"misar:{inbox:alice",
            b"misar:{campaign:}",
            b"misar:{campaign:has space}",
            b"misar:{inbox:\xff}",
            b"misar:revoke:x",
            b"misar:last:{campaign:c1}",
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
    fn bookkeeping_keys_sit_beside_the_channels() {
        let names = Names::new("misar");
        let alice = StreamKey::Inbox(AccountId::new("alice"));
        let c1 = StreamKey::Campaign(campaign("c1"));
        assert_eq!(names.meta(&alice), b"misar:meta:{inbox:alice}");
        assert_eq!(names.history(&c1), b"misar:history:{campaign:c1}");
        let other = Names::new("a:b");
        assert_eq!(other.meta(&c1), b"a:b:meta:{campaign:c1}");
        // Keys are not channels: a message "on" one is refused.
        assert_eq!(names.parse(&names.meta(&alice)), None);
    }

    /// Redis Cluster hashes the bytes between the first `{` and the next `}`.
    fn hash_tag(name: &[u8]) -> &[u8] {
        let open = name.iter().position(|&b| b == b'{').unwrap();
        let close = name[open + 1..].iter().position(|&b| b == b'}').unwrap();
        &name[open + 1..open + 1 + close]
    }

    #[test]
    fn every_name_of_a_stream_shares_one_hash_tag() {
        let names = Names::new("misar");
        for id in ["alice", "a}b", "{x}", "", "x{", "c_1"] {
            let inbox = StreamKey::Inbox(AccountId::new(id));
            let tag = hash_tag(&names.channel(&inbox)).to_vec();
            assert_eq!(hash_tag(&names.meta(&inbox)), tag.as_slice(), "{id}");
            assert_eq!(hash_tag(&names.history(&inbox)), tag.as_slice(), "{id}");
            assert_eq!(
                names.parse(&names.channel(&inbox)),
                Some(Target::Stream(inbox))
            );
        }
        let c1 = campaign("c1");
        let stream = StreamKey::Campaign(c1.clone());
        let tag = hash_tag(&names.channel(&stream)).to_vec();
        assert_eq!(tag, b"campaign:c1");
        for name in [
            names.meta(&stream),
            names.history(&stream),
            names.last(&c1),
            names.done(&c1),
        ] {
            assert_eq!(hash_tag(&name), tag.as_slice());
        }
        // An inbox and a campaign of the same id are different streams, different tags.
        assert_ne!(
            hash_tag(&names.channel(&StreamKey::Inbox(AccountId::new("c1")))),
            tag.as_slice()
        );
    }

    #[test]
    fn messages_carry_their_position() {
        let position = Position::parse("e_1-X:42").unwrap();
        let json = br#"{"type":"x"}"#;
        let message = frame_message(&position, json);
        assert_eq!(message, b"e_1-X:42\n{\"type\":\"x\"}");
        let (parsed, start) = parse_message(&message).unwrap();
        assert_eq!(parsed, position);
        assert_eq!(&message[start..], json);
        let top = format!("{}:{}\nx", "a".repeat(32), u64::MAX);
        assert_eq!(parse_message(top.as_bytes()).unwrap().0.offset, u64::MAX);
        // A batch: one event per line after the position of the first.
        let batch = b"e:7\n{\"a\":1}\n{\"b\":2}";
        let (position, start) = parse_message(batch).unwrap();
        assert_eq!(position.offset, 7);
        let events: Vec<&[u8]> = events_of(&batch[start..]).collect();
        assert_eq!(events, [&b"{\"a\":1}"[..], b"{\"b\":2}"]);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let long_epoch = format!("{}:1\n{{}}", "a".repeat(33));
        let far_newline = format!("e:1{}\n{{}}", " ".repeat(100));
        let too_big = format!("e:{}0\n{{}}", u64::MAX);
        for message in [
            &b""[..],
            b"\n",
            br#"{"type":"x"}"#,
            b"e:1",
            b"e:1\n",
            b"e:0\n{}",
            b"e:01\n{}",
            b"e:-1\n{}",
            b"e:+1\n{}",
            b"e1\n{}",
            b":1\n{}",
            b"e.x:1\n{}",
            b"e:1 \n{}",
            b"e:1\r\n{}",
            b"\xff:1\n{}",
            b"e:1:2\n{}",
            long_epoch.as_bytes(),
            far_newline.as_bytes(),
            too_big.as_bytes(),
        ] {
            assert_eq!(parse_message(message), None, "{message:?}");
        }
        // Any bytes at all: no panic.
        for a in 0..=255u8 {
            for b in [b'\n', b':', b'0', b'1', a] {
                let _ = parse_message(&[a, b, b'\n', a]);
                let _ = parse_message(&[b'e', b':', a, b]);
            }
        }
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
