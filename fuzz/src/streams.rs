//! `streams`: the core's fan-out table ([`Streams`], `misar_proto::streams`) driven by
//! subscriptions, publishes, relayed bytes, revocations, a shutdown, drains and time, with a
//! real [`ServerSession`] per admitted connection.
//!
//! Input: a [`StreamsSetup`] (small limits, a late-joiner cache of 0 to 4 campaigns, sometimes
//! a small `max_event_bytes`, a short revocation memory) then [`StreamsOp`]s until the input
//! ends (at most [`MAX_OPS`]), in `arbitrary`'s layout. Accounts, campaigns, connections, marks
//! and samples are picked modulo how many there are. The table is a `Streams<usize>`: a
//! connection's handle is its index in the harness. There are [`ACCOUNTS`] accounts and the
//! campaigns of [`CAMPAIGNS`] (named like the sample events' `campaignId`s, so sample frames
//! relayed to a campaign can be valid), more than the cache holds.
//!
//! A model runs alongside (the one of `misar-proto/tests/streams_props.rs`, plus the cache's
//! least-recently-updated order and the revocation memory's bounds) and checks, whatever the
//! sequence:
//! - nothing panics, and every answer is the model's: each admission or refusal (shutdown,
//!   then the account's limit, then the total, then a mark too old to judge), each publish or
//!   refusal (unknown type, campaign mismatch, too large, finished), each `validate_relayed`;
//! - the recipients of every delivery are exactly the model's subscribers of the stream (the
//!   connections admitted to it and not unsubscribed, revoked or not), and they get the very
//!   bytes that were validated;
//! - the limits are never exceeded (per account, in total), and nothing is admitted after the
//!   shutdown; revocation and shutdown targets are exactly the model's;
//! - a campaign whose terminal event was published (and that the cache did not evict since)
//!   refuses every publish and relayed delivery with [`PublishError::Finished`], and a late
//!   joiner's `first` is that terminal event; otherwise `first` is the latest `progress` kept;
//! - a subscription whose mark predates a revocation of its account (4401, which wins) or
//!   campaign (4403) is admitted revoked; one whose mark predates a forgotten revocation is
//!   refused as stale; a revoked connection's session takes no event, and no text reaches a
//!   revoked connection after the revocation;
//! - [`validate_relayed`] accepts only bytes within the bound, starting with `{"type":` and a
//!   string, ending with `}`, UTF-8 and one JSON value; what it accepts keeps the same bytes,
//!   with the class the decoder gives (a newer type is ordinary);
//! - memory stays bounded: the table holds exactly the streams with a subscriber or a cached
//!   event (so `stream_count ≤ live connections + cached campaigns`), the cache at most its
//!   capacity (exactly the model's campaigns, least recently updated evicted first), the
//!   registry at most `max_remembered_revocations` revocations (exactly the model's count);
//! - every connection receives, in order, what was delivered to it while subscribed (after
//!   its first event); missing are only `progress` events a later one superseded, or
//!   everything once its session began to close;
//! - once every connection is gone, only the cached campaigns' streams remain.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use misar_proto::auth::{AccountId, CredentialSource};
use misar_proto::close::CloseCode;
use misar_proto::event::{
    CampaignEvent, Cancelled, Completed, Decoder, EmailReceived, EncodedEvent, Event, EventClass,
    Failed, InboxEvent, Progress, Timestamp, UnknownEvent,
};
use misar_proto::handshake::Accepted;
use misar_proto::message::Message;
use misar_proto::route::{CampaignId, Channel};
use misar_proto::server::{CloseCause, ServerConfig, ServerOutput, ServerSession, SessionState};
use misar_proto::streams::{
    ConnectionId, DEFAULT_MAX_EVENT_BYTES, Delivery, PublishError, PublishRules, RevocationMark,
    StreamKey, Streams, StreamsConfig, SubscribeError, validate_relayed,
};

use crate::samples;
use crate::server_session::Unit;
use crate::{encode_enum, encode_struct};

/// Operations per input, at most (keeps every input fast).
pub const MAX_OPS: usize = 256;

/// Accounts the connections belong to.
pub const ACCOUNTS: usize = 3;

/// The campaigns (more than the cache's largest capacity, 4). The first three are the
/// `campaignId`s of the sample events.
pub const CAMPAIGNS: [&str; 5] = ["c-42", "c", "uuid", "c-3", "c-4"];

/// The campaign id an event names when it is about none of [`CAMPAIGNS`].
const ELSEWHERE: &str = "elsewhere";

/// Relayed raw bytes are cut to this length.
const MAX_RAW: usize = 1024;

/// `{"type":`, the start of every compact event.
const PREFIX: &[u8] = b"{\"type\":";

/// The table's and the sessions' settings, in raw form; [`StreamsSetup::config`] maps each to
/// a small range (the identity within it).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct StreamsSetup {
    /// `max_connections_per_account`, 1 to 4.
    pub per_account: u8,
    /// `max_connections`, 1 to 8.
    pub total: u8,
    /// `last_event_cache`, 0 (off) to 4 campaigns.
    pub cache: u8,
    /// `publish.max_event_bytes`: 64 KiB (`None`) or 1 to 512 bytes.
    pub max_event_bytes: Option<u16>,
    /// `revocation_memory` in milliseconds (0 counts as 1).
    pub memory_ms: u16,
    /// `max_remembered_revocations`, 1 to 8.
    pub max_revocations: u8,
    /// Each session's `max_queued_events`, 1 to 8.
    pub queue: u8,
}
encode_struct!(StreamsSetup {
    per_account,
    total,
    cache,
    max_event_bytes,
    memory_ms,
    max_revocations,
    queue,
});

/// `raw` mapped into `lo..=hi`, the identity within the range.
fn within(raw: u16, lo: u16, hi: u16) -> usize {
    usize::from(lo + raw.wrapping_sub(lo) % (hi - lo + 1))
}

impl StreamsSetup {
    /// Room for everyone, the full cache, events of any size, a 10 s revocation memory.
    pub fn typical() -> Self {
        Self {
            per_account: 3,
            total: 8,
            cache: 4,
            max_event_bytes: None,
            memory_ms: 10_000,
            max_revocations: 8,
            queue: 8,
        }
    }

    /// The table's configuration.
    pub fn config(&self) -> StreamsConfig {
        StreamsConfig {
            max_connections_per_account: within(self.per_account.into(), 1, 4),
            max_connections: within(self.total.into(), 1, 8),
            last_event_cache: within(self.cache.into(), 0, 4),
            publish: PublishRules {
                max_event_bytes: self
                    .max_event_bytes
                    .map_or(DEFAULT_MAX_EVENT_BYTES, |n| within(n, 1, 512)),
            },
            revocation_memory: Duration::from_millis(u64::from(self.memory_ms.max(1))),
            max_remembered_revocations: within(self.max_revocations.into(), 1, 8),
            // The model knows §2.7 and the registry, not §2.11's history (which keeps idle
            // streams): that is the `client_session` target's and the core's property tests'.
            history: misar_proto::streams::HistoryConfig::none(),
            ..StreamsConfig::default()
        }
    }

    fn session_config(&self) -> ServerConfig {
        ServerConfig {
            max_queued_events: within(self.queue.into(), 1, 8),
            ..ServerConfig::default()
        }
    }
}

/// An inbox event to publish.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboxKind {
    /// `email_received`, unique (its subject counts the operations), padded by `pad` bytes.
    Email,
    /// One of the sample inbox events (modulo their number).
    Sample {
        /// Which one.
        index: u8,
    },
    /// A type this version does not know (refused when published here).
    Unknown,
}
encode_enum!(InboxKind, 3; Email => 0, Sample { index } => 1, Unknown => 2);

/// A campaign event to publish.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CampaignKind {
    Progress,
    Completed,
    /// `failed`, its error padded by `pad` bytes.
    Failed,
    Cancelled,
    /// A type this version does not know (`paused`).
    Unknown,
}
encode_enum!(CampaignKind, 5; Progress => 0, Completed => 1, Failed => 2, Cancelled => 3, Unknown => 4);

/// A stream to deliver relayed bytes to.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// An account's inbox.
    Inbox {
        /// Which account.
        account: u8,
    },
    /// A campaign.
    Campaign {
        /// Which campaign.
        campaign: u8,
    },
}
encode_enum!(Target, 2; Inbox { account } => 0, Campaign { campaign } => 1);

/// A change to a sample frame, to get near-valid bytes.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// As it is.
    Keep,
    /// Only the first `at` bytes (modulo the length + 1).
    Cut {
        /// Where.
        at: u16,
    },
    /// One byte replaced.
    Set {
        /// Where (modulo the length).
        at: u16,
        /// By what.
        byte: u8,
    },
    /// One byte inserted.
    Insert {
        /// Where (modulo the length + 1).
        at: u16,
        /// What.
        byte: u8,
    },
    /// One byte removed.
    Remove {
        /// Where (modulo the length).
        at: u16,
    },
    /// `,"pad":"aaa…"` (`len` modulo 1024 bytes of padding) inserted before the last byte, to
    /// cross `max_event_bytes`.
    Grow {
        /// How much padding.
        len: u16,
    },
    /// A space before and after (valid JSON, not compact).
    Wrap,
}
encode_enum!(Edit, 7;
    Keep => 0,
    Cut { at } => 1,
    Set { at, byte } => 2,
    Insert { at, byte } => 3,
    Remove { at } => 4,
    Grow { len } => 5,
    Wrap => 6,
);

impl Edit {
    fn apply(self, mut bytes: Vec<u8>) -> Vec<u8> {
        let len = bytes.len();
        match self {
            Edit::Keep => {}
            Edit::Cut { at } => bytes.truncate(usize::from(at) % (len + 1)),
            Edit::Set { at, byte } => {
                if let Some(b) = bytes.get_mut(usize::from(at) % len.max(1)) {
                    *b = byte;
                }
            }
            Edit::Insert { at, byte } => bytes.insert(usize::from(at) % (len + 1), byte),
            Edit::Remove { at } => {
                if len > 0 {
                    bytes.remove(usize::from(at) % len);
                }
            }
            Edit::Grow { len: pad } => {
                let mut field = b",\"pad\":\"".to_vec();
                field.resize(field.len() + usize::from(pad) % 1024, b'a');
                field.push(b'"');
                let at = len.saturating_sub(1);
                bytes.splice(at..at, field);
            }
            Edit::Wrap => {
                bytes.insert(0, b' ');
                bytes.push(b' ');
            }
        }
        bytes
    }
}

/// Bytes "another node" relays, for [`validate_relayed`].
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Relayed {
    /// Any bytes (cut to 1024).
    Raw {
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A sample frame (modulo their number: the protocol's examples, every event type
    /// encoded, the hand-written corners), edited.
    Sample {
        /// Which one.
        index: u8,
        /// How it is changed.
        edit: Edit,
    },
    /// `{"type":"<name>"[,"campaignId":"<campaign>"][,"n":<n>]}`: mostly a type newer than
    /// this version (or a known type missing its fields).
    Newer {
        /// Which name (modulo [`NEWER_TYPES`]).
        name: u8,
        /// The campaign it names, if any.
        campaign: Option<u8>,
        /// An extra number field (0: none).
        n: u16,
    },
    /// A campaign event as this version encodes it, about the target's campaign (or
    /// `about`'s).
    Campaign {
        /// Its type.
        kind: CampaignKind,
        /// The campaign it names instead of the target's (an index past the campaigns names
        /// none of them).
        about: Option<u8>,
        /// Padding.
        pad: u8,
    },
    /// An inbox event as this version encodes it.
    Inbox {
        /// Its type.
        kind: InboxKind,
        /// Padding.
        pad: u8,
    },
}
encode_enum!(Relayed, 5;
    Raw { bytes } => 0,
    Sample { index, edit } => 1,
    Newer { name, campaign, n } => 2,
    Campaign { kind, about, pad } => 3,
    Inbox { kind, pad } => 4,
);

/// The `type`s of [`Relayed::Newer`].
pub const NEWER_TYPES: [&str; 8] = [
    "paused",
    "resumed",
    "calendar_invite",
    "",
    "progress",
    "completed",
    "email_received",
    "a\\\"b",
];

/// One step of the scenario.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum StreamsOp {
    /// A connection of `account` to its inbox (`campaign: None`) or to a campaign, whose hooks
    /// ran after a fresh mark (`mark: None`) or after the mark taken `mark` marks ago.
    Subscribe {
        /// Whose.
        account: u8,
        /// To which campaign, if any.
        campaign: Option<u8>,
        /// Which mark.
        mark: Option<u8>,
    },
    /// The connection `conn` (of all admitted so far) goes away: unsubscribe (a second time:
    /// refused as unknown), and its transport ends.
    Unsubscribe {
        /// Which.
        conn: u8,
    },
    /// Every connection whose session is no longer open goes away (what a driver does when a
    /// session ends).
    Reap,
    /// Takes a mark (a handshake's hooks begin).
    TakeMark,
    /// `publish_inbox`.
    PublishInbox {
        /// To whose inbox.
        account: u8,
        /// What.
        kind: InboxKind,
        /// Padding.
        pad: u8,
    },
    /// `publish_campaign`.
    PublishCampaign {
        /// To which campaign.
        campaign: u8,
        /// What.
        kind: CampaignKind,
        /// The campaign the event names instead (an index past the campaigns names none).
        about: Option<u8>,
        /// Padding.
        pad: u8,
    },
    /// `validate_relayed` on `bytes` for `target`, then `deliver` if accepted.
    Deliver {
        /// To which stream.
        target: Target,
        /// What.
        bytes: Relayed,
    },
    /// `revoke_account` (and the sessions it names are closed with 4401).
    RevokeAccount {
        /// Whose.
        account: u8,
    },
    /// `revoke_campaign` (and the sessions it names are closed with 4403).
    RevokeCampaign {
        /// Which.
        campaign: u8,
    },
    /// `shutdown` (and every session it names is shut down).
    Shutdown,
    /// Drains at most `max` outputs (0: all) of connection `conn`'s session.
    Drain {
        /// Which.
        conn: u8,
        /// How many.
        max: u8,
    },
    /// Drains every session.
    DrainAll,
    /// Time passes (the live sessions handle their timers).
    Advance {
        /// How much.
        amount: u16,
        /// In which unit.
        unit: Unit,
    },
}
encode_enum!(StreamsOp, 13;
    Subscribe { account, campaign, mark } => 0,
    Unsubscribe { conn } => 1,
    Reap => 2,
    TakeMark => 3,
    PublishInbox { account, kind, pad } => 4,
    PublishCampaign { campaign, kind, about, pad } => 5,
    Deliver { target, bytes } => 6,
    RevokeAccount { account } => 7,
    RevokeCampaign { campaign } => 8,
    Shutdown => 9,
    Drain { conn, max } => 10,
    DrainAll => 11,
    Advance { amount, unit } => 12,
);

/// Reads an input: the setup, then operations until the input ends.
pub fn parse(data: &[u8]) -> Option<(StreamsSetup, Vec<StreamsOp>)> {
    let mut u = Unstructured::new(data);
    let setup = StreamsSetup::arbitrary(&mut u).ok()?;
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match StreamsOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    Some((setup, ops))
}

/// The target's body.
pub fn run(data: &[u8]) {
    if let Some((setup, ops)) = parse(data) {
        let _ = run_scenario(&setup, &ops);
    }
}

/// What happened in a scenario (for the tests of the seeds themselves).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamsReport {
    /// Subscriptions admitted (revoked or not).
    pub admitted: u64,
    /// Admitted to be closed at once with 4401.
    pub admitted_4401: u64,
    /// Admitted to be closed at once with 4403.
    pub admitted_4403: u64,
    /// Refused: a limit (per account or in total).
    pub refused_limit: u64,
    /// Refused: shutting down.
    pub refused_shutdown: u64,
    /// Refused: a mark too old to judge.
    pub refused_stale: u64,
    /// Late joiners whose first event was a terminal one.
    pub terminal_firsts: u64,
    /// Publishes and relayed deliveries that went out.
    pub deliveries: u64,
    /// Deliveries that reached at least one connection.
    pub fanouts: u64,
    /// Refused as finished.
    pub refused_finished: u64,
    /// Publishes refused before the stream was asked (unknown type, mismatch, too large).
    pub refused_invalid: u64,
    /// Relayed bytes `validate_relayed` accepted.
    pub relayed_accepted: u64,
    /// Of which of a type this version does not know.
    pub relayed_newer: u64,
    /// Relayed bytes refused.
    pub relayed_refused: u64,
    /// Campaigns the cache forgot.
    pub evictions: u64,
    /// Connections a revocation closed.
    pub revoked: u64,
    /// Texts the connections received.
    pub texts: u64,
    /// Why each connection's session closed, if it did, before the final unsubscribes.
    pub causes: Vec<Option<CloseCause>>,
}

/// Runs a parsed scenario, checking every invariant.
pub fn run_scenario(setup: &StreamsSetup, ops: &[StreamsOp]) -> StreamsReport {
    let mut harness = Harness::new(setup);
    harness.check_table();
    for op in ops {
        harness.apply(op);
        harness.check_table();
    }
    harness.finish();
    harness.report
}

fn account(a: usize) -> AccountId {
    AccountId::from(format!("acct-{a}"))
}

fn campaign(c: usize) -> CampaignId {
    match CampaignId::new(CAMPAIGNS[c]) {
        Ok(id) => id,
        Err(e) => panic!("campaign {c}: {e}"),
    }
}

/// The id an event names for the index `about` (past the campaigns: none of them).
fn campaign_name(about: u8) -> &'static str {
    CAMPAIGNS
        .get(usize::from(about) % (CAMPAIGNS.len() + 1))
        .copied()
        .unwrap_or(ELSEWHERE)
}

fn key(a: usize, c: Option<usize>) -> StreamKey {
    match c {
        None => StreamKey::Inbox(account(a)),
        Some(c) => StreamKey::Campaign(campaign(c)),
    }
}

fn timestamp() -> Timestamp {
    match Timestamp::parse("2026-05-27T10:15:00Z") {
        Ok(t) => t,
        Err(e) => panic!("fixed timestamp: {e}"),
    }
}

fn inbox_samples() -> Vec<InboxEvent> {
    samples::events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Inbox(event) => Some(event),
            _ => None,
        })
        .collect()
}

fn inbox_event(kind: InboxKind, n: u64, pad: u8) -> InboxEvent {
    match kind {
        InboxKind::Email => InboxEvent::EmailReceived(EmailReceived::new(
            "ana@example.com",
            format!("e{n}{}", "x".repeat(pad.into())),
            timestamp(),
        )),
        InboxKind::Sample { index } => {
            let all = inbox_samples();
            match all.get(usize::from(index) % all.len().max(1)) {
                Some(event) => event.clone(),
                None => panic!("no inbox sample"),
            }
        }
        InboxKind::Unknown => InboxEvent::Unknown(UnknownEvent::new(
            "calendar_invite",
            Bytes::from(format!(r#"{{"type":"calendar_invite","n":{n}}}"#)),
        )),
    }
}

fn campaign_event(kind: CampaignKind, id: &str, n: u64, pad: u8) -> CampaignEvent {
    let Ok(campaign_id) = CampaignId::new(id) else {
        panic!("the target's campaign ids are valid: {id:?}");
    };
    match kind {
        CampaignKind::Progress => CampaignEvent::Progress(Progress::new(
            campaign_id,
            n,
            1_000_000,
            n,
            0,
            u64::from(pad),
        )),
        CampaignKind::Completed => {
            CampaignEvent::Completed(Completed::new(campaign_id, n, n, 0, u64::from(pad)))
        }
        CampaignKind::Failed => CampaignEvent::Failed(
            Failed::new(campaign_id, format!("e{n}{}", "x".repeat(pad.into()))).with_sent(n),
        ),
        CampaignKind::Cancelled => CampaignEvent::Cancelled(
            Cancelled::new(campaign_id)
                .with_sent(n)
                .with_cancelled_at(timestamp()),
        ),
        CampaignKind::Unknown => CampaignEvent::Unknown(UnknownEvent::new(
            "paused",
            Bytes::from(format!(
                r#"{{"type":"paused","campaignId":"{id}","n":{n}}}"#
            )),
        )),
    }
}

impl Relayed {
    /// The bytes, for a stream about `campaign_id` (the inbox: the first campaign's).
    fn build(&self, campaign_id: &'static str, n: u64) -> Vec<u8> {
        match self {
            Relayed::Raw { bytes } => bytes[..bytes.len().min(MAX_RAW)].to_vec(),
            Relayed::Sample { index, edit } => {
                let frames = samples::frames();
                let frame = frames
                    .get(usize::from(*index) % frames.len().max(1))
                    .cloned()
                    .unwrap_or_default();
                edit.apply(frame)
            }
            Relayed::Newer { name, campaign, n } => {
                let name = NEWER_TYPES[usize::from(*name) % NEWER_TYPES.len()];
                let mut text = format!(r#"{{"type":"{name}""#);
                if let Some(c) = campaign {
                    text.push_str(&format!(r#","campaignId":"{}""#, campaign_name(*c)));
                }
                if *n != 0 {
                    text.push_str(&format!(r#","n":{n}"#));
                }
                text.push('}');
                text.into_bytes()
            }
            Relayed::Campaign { kind, about, pad } => {
                let id = about.map_or(campaign_id, campaign_name);
                campaign_event(*kind, id, n, *pad).encode().bytes().to_vec()
            }
            Relayed::Inbox { kind, pad } => inbox_event(*kind, n, *pad).encode().bytes().to_vec(),
        }
    }
}

/// What `validate_relayed` should answer: the class and whether the type is unknown here.
fn expect_relayed(
    key: &StreamKey,
    bytes: &[u8],
    max: usize,
) -> Result<(EventClass, bool), PublishError> {
    if bytes.len() > max {
        return Err(PublishError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    if !(bytes.starts_with(PREFIX) && bytes.ends_with(b"}")) {
        return Err(PublishError::NotCompact);
    }
    let decoder = Decoder::new(max);
    match key {
        StreamKey::Inbox(_) => {
            let event = decoder.inbox(bytes)?;
            Ok((event.class(), matches!(event, InboxEvent::Unknown(_))))
        }
        StreamKey::Campaign(id) => {
            let event = decoder.campaign(bytes)?;
            let unknown = matches!(event, CampaignEvent::Unknown(_));
            if let (false, Some(found)) = (unknown, event.campaign_id()) {
                if found != id {
                    return Err(PublishError::CampaignMismatch {
                        target: id.clone(),
                        found: found.clone(),
                    });
                }
            }
            Ok((event.class(), unknown))
        }
    }
}

/// What any accepted relayed bytes must be, whatever the decoder says: within the bound, a
/// compact object whose first member is a string `type`, UTF-8, one JSON value.
fn check_accepted_relayed(bytes: &[u8], max: usize) {
    let show = || String::from_utf8_lossy(bytes).into_owned();
    assert!(bytes.len() <= max, "accepted over the bound: {}", show());
    assert!(bytes.starts_with(PREFIX), "accepted without the prefix");
    assert!(bytes.ends_with(b"}"), "accepted not ending with }}");
    let rest = &bytes[PREFIX.len()..];
    let value = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .and_then(|i| rest.get(i));
    assert_eq!(value, Some(&b'"'), "accepted a non-string type: {}", show());
    assert!(
        std::str::from_utf8(bytes).is_ok(),
        "accepted bytes that are not UTF-8 (they go out as a text frame)"
    );
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok(),
        "accepted bytes that are not one JSON value: {}",
        show()
    );
}

/// One admitted connection.
struct Conn {
    id: ConnectionId,
    account: usize,
    key: StreamKey,
    session: ServerSession,
    /// Still subscribed in the table.
    subscribed: bool,
    /// A revocation reached it (its session was told, or admitted revoked).
    revoked: bool,
    /// What it may receive, in order: its first event, then what was delivered to it while
    /// subscribed and not revoked.
    allowed: Vec<(Bytes, EventClass)>,
    received: Vec<Bytes>,
}

impl Conn {
    /// Polls at most `max` outputs (0: all); returns the texts received.
    fn drain(&mut self, max: usize) -> u64 {
        let mut texts = 0;
        let mut polled = 0;
        while max == 0 || polled < max {
            let Some(output) = self.session.poll_output() else {
                break;
            };
            polled += 1;
            assert!(polled < 10_000, "poll_output does not run dry");
            if let ServerOutput::Transmit(Message::Text(bytes)) = output {
                assert!(
                    !self.revoked,
                    "a text reached a connection after its revocation: {}",
                    String::from_utf8_lossy(&bytes)
                );
                self.received.push(bytes);
                texts += 1;
            }
        }
        texts
    }

    /// What it received is what it may receive, in order, with only superseded `progress`
    /// events missing (or anything once its session began to close).
    fn check_deliveries(&self) {
        let open = self.session.close_cause().is_none();
        let mut unmatched = self.received.len();
        let mut later_progress = false;
        // From the end: the latest event must be there unless the session closed.
        for (bytes, class) in self.allowed.iter().rev() {
            if unmatched > 0 && self.received[unmatched - 1] == bytes {
                unmatched -= 1;
            } else {
                assert!(
                    !open || (*class == EventClass::Progress && later_progress),
                    "a {class:?} event went missing on an open session: {}",
                    String::from_utf8_lossy(bytes)
                );
            }
            later_progress |= *class == EventClass::Progress;
        }
        assert_eq!(
            unmatched,
            0,
            "received something not delivered, or out of order: {:?}",
            String::from_utf8_lossy(&self.received[unmatched.saturating_sub(1)])
        );
    }
}

/// A revocation, as the model remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Revoked {
    Account(usize),
    Campaign(usize),
}

impl Revoked {
    fn bit(self) -> u32 {
        match self {
            Revoked::Account(a) => 1 << a,
            Revoked::Campaign(c) => 1 << (ACCOUNTS + c),
        }
    }
}

/// A campaign's memory, as the model sees it.
#[derive(Clone, Debug, Default)]
struct CampaignModel {
    /// The latest `progress`, or the terminal event.
    cached: Option<Bytes>,
    finished: bool,
}

struct Harness {
    table: Streams<usize>,
    config: StreamsConfig,
    session_config: ServerConfig,
    keys: Vec<StreamKey>,
    now: Instant,
    /// Operations so far (makes every published event unique).
    counter: u64,
    conns: Vec<Conn>,
    /// The connections subscribed in the table, by index.
    live: Vec<usize>,
    /// Marks taken, with the number of revocations before each.
    marks: Vec<(RevocationMark, usize)>,
    shut_down: bool,
    campaigns: Vec<CampaignModel>,
    /// The campaigns keeping an event, least recently updated first.
    lru: VecDeque<usize>,
    /// Every revocation, oldest first (revocation `i` is generation `i + 1`), with its time.
    revocations: Vec<(Instant, Revoked)>,
    /// When the registry last pruned its memory (each admission and revocation does).
    last_prune: Instant,
    report: StreamsReport,
}

impl Harness {
    fn new(setup: &StreamsSetup) -> Self {
        let config = setup.config();
        let table = match Streams::new(
            config.clone(),
            misar_proto::resume::Epoch::new("fuzz").expect("a valid epoch"),
        ) {
            Ok(table) => table,
            Err(e) => panic!("a valid configuration was refused: {e}"),
        };
        let mut keys: Vec<StreamKey> = (0..ACCOUNTS).map(|a| key(a, None)).collect();
        keys.extend((0..CAMPAIGNS.len()).map(|c| key(0, Some(c))));
        let now = Instant::now();
        let marks = vec![(table.mark(), 0)];
        Self {
            table,
            config,
            session_config: setup.session_config(),
            keys,
            now,
            counter: 0,
            conns: Vec::new(),
            live: Vec::new(),
            marks,
            shut_down: false,
            campaigns: vec![CampaignModel::default(); CAMPAIGNS.len()],
            lru: VecDeque::new(),
            revocations: Vec::new(),
            last_prune: now,
            report: StreamsReport::default(),
        }
    }

    fn apply(&mut self, op: &StreamsOp) {
        self.counter += 1;
        match *op {
            StreamsOp::Subscribe {
                account,
                campaign,
                mark,
            } => self.subscribe(
                usize::from(account) % ACCOUNTS,
                campaign.map(|c| usize::from(c) % CAMPAIGNS.len()),
                mark,
            ),
            StreamsOp::Unsubscribe { conn } => {
                if !self.conns.is_empty() {
                    self.unsubscribe(usize::from(conn) % self.conns.len());
                }
            }
            StreamsOp::Reap => {
                let ended: Vec<usize> = self
                    .live
                    .iter()
                    .copied()
                    .filter(|&i| self.conns[i].session.state() != SessionState::Open)
                    .collect();
                for i in ended {
                    self.unsubscribe(i);
                }
            }
            StreamsOp::TakeMark => {
                let mark = self.table.mark();
                assert_eq!(mark.generation(), self.revocations.len() as u64);
                self.marks.push((mark, self.revocations.len()));
            }
            StreamsOp::PublishInbox { account, kind, pad } => {
                self.publish_inbox(usize::from(account) % ACCOUNTS, kind, pad);
            }
            StreamsOp::PublishCampaign {
                campaign,
                kind,
                about,
                pad,
            } => self.publish_campaign(usize::from(campaign) % CAMPAIGNS.len(), kind, about, pad),
            StreamsOp::Deliver { target, ref bytes } => self.deliver_relayed(target, bytes),
            StreamsOp::RevokeAccount { account } => {
                self.revoke(Revoked::Account(usize::from(account) % ACCOUNTS));
            }
            StreamsOp::RevokeCampaign { campaign } => {
                self.revoke(Revoked::Campaign(usize::from(campaign) % CAMPAIGNS.len()));
            }
            StreamsOp::Shutdown => {
                let mut targets = self.table.shutdown();
                targets.sort_unstable();
                assert_eq!(targets, self.sorted_live(), "shutdown targets");
                self.shut_down = true;
                for i in targets {
                    self.conns[i].session.shutdown(self.now);
                }
            }
            StreamsOp::Drain { conn, max } => {
                if !self.conns.is_empty() {
                    let i = usize::from(conn) % self.conns.len();
                    self.report.texts += self.conns[i].drain(usize::from(max));
                }
            }
            StreamsOp::DrainAll => self.drain_all(),
            StreamsOp::Advance { amount, unit } => {
                self.now += unit.duration(amount);
                for &i in &self.live {
                    self.conns[i].session.handle_timeout(self.now);
                }
            }
        }
    }

    fn drain_all(&mut self) {
        for conn in &mut self.conns {
            self.report.texts += conn.drain(0);
        }
    }

    fn sorted_live(&self) -> Vec<usize> {
        let mut live = self.live.clone();
        live.sort_unstable();
        live
    }

    /// The model's subscribers of `key`, sorted.
    fn subscribers(&self, key: &StreamKey) -> Vec<usize> {
        let mut subscribers: Vec<usize> = self
            .live
            .iter()
            .copied()
            .filter(|&i| self.conns[i].key == *key)
            .collect();
        subscribers.sort_unstable();
        subscribers
    }

    /// Revocations the registry forgot (a prefix: by count beyond the maximum, and by age at
    /// its last pruning).
    fn forgotten(&self) -> usize {
        let by_count = self
            .revocations
            .len()
            .saturating_sub(self.config.max_remembered_revocations);
        let by_age = self
            .revocations
            .iter()
            .take_while(|(at, _)| {
                self.last_prune.saturating_duration_since(*at) > self.config.revocation_memory
            })
            .count();
        by_count.max(by_age)
    }

    /// Accounts and campaigns with a revocation remembered.
    fn remembered(&self) -> usize {
        let keys = self.revocations[self.forgotten()..]
            .iter()
            .fold(0u32, |keys, (_, key)| keys | key.bit());
        keys.count_ones() as usize
    }

    /// What `subscribe` must answer for a mark taken after `generation` revocations.
    fn expect_admission(
        &self,
        a: usize,
        c: Option<usize>,
        generation: usize,
    ) -> Result<Option<CloseCode>, SubscribeError> {
        let retry_after = self.config.retry_after;
        if self.shut_down {
            return Err(SubscribeError::ShuttingDown { retry_after });
        }
        let of_account = self
            .live
            .iter()
            .filter(|&&i| self.conns[i].account == a)
            .count();
        if of_account >= self.config.max_connections_per_account {
            return Err(SubscribeError::TooManyForAccount {
                limit: self.config.max_connections_per_account,
            });
        }
        if self.live.len() >= self.config.max_connections {
            return Err(SubscribeError::TooManyConnections {
                limit: self.config.max_connections,
                retry_after,
            });
        }
        if generation == self.revocations.len() {
            return Ok(None);
        }
        if generation < self.forgotten() {
            return Err(SubscribeError::StaleHandshake { retry_after });
        }
        let since = &self.revocations[generation..];
        if since.iter().any(|(_, key)| *key == Revoked::Account(a)) {
            return Ok(Some(CloseCode::Unauthorized));
        }
        if let Some(c) = c
            && since.iter().any(|(_, key)| *key == Revoked::Campaign(c))
        {
            return Ok(Some(CloseCode::Forbidden));
        }
        Ok(None)
    }

    fn subscribe(&mut self, a: usize, c: Option<usize>, mark: Option<u8>) {
        let (mark, generation) = match mark {
            None => (self.table.mark(), self.revocations.len()),
            Some(back) => {
                let back = usize::from(back) % self.marks.len();
                self.marks[self.marks.len() - 1 - back]
            }
        };
        assert_eq!(mark.generation(), generation as u64);
        let key = key(a, c);
        let opens = self.subscribers(&key).is_empty();
        // `admit` prunes the revocation memory first, whatever it decides.
        self.last_prune = self.now;
        let expected = self.expect_admission(a, c, generation);
        let index = self.conns.len();
        let result = self
            .table
            .subscribe(&account(a), &key, mark, index, self.now);
        let subscribed = match (result, expected) {
            (Ok(subscribed), Ok(revoked)) => {
                assert_eq!(
                    subscribed.revoked, revoked,
                    "admitted with the wrong revocation"
                );
                subscribed
            }
            (Err(error), Err(expected)) => {
                assert_eq!(error, expected, "refused for the wrong reason");
                match error {
                    SubscribeError::ShuttingDown { .. } => self.report.refused_shutdown += 1,
                    SubscribeError::StaleHandshake { .. } => self.report.refused_stale += 1,
                    _ => self.report.refused_limit += 1,
                }
                return;
            }
            (result, expected) => panic!("subscribe answered {result:?}, expected {expected:?}"),
        };
        self.report.admitted += 1;
        assert!(
            self.conns.iter().all(|conn| conn.id != subscribed.id),
            "a connection id was reused"
        );
        assert_eq!(subscribed.opened, opens, "opened");
        // The first event: a campaign's terminal event once finished, else its latest
        // progress (the inbox keeps nothing).
        let model = c.map(|c| &self.campaigns[c]);
        let expected_first = model.and_then(|m| m.cached.as_ref());
        assert_eq!(
            subscribed.first.as_ref().map(EncodedEvent::bytes),
            expected_first,
            "the late joiner's first event"
        );
        if model.is_some_and(|m| m.finished) {
            assert_eq!(
                subscribed.first.as_ref().map(EncodedEvent::class),
                Some(EventClass::Terminal),
                "a finished campaign's late joiner did not get the terminal event first"
            );
            self.report.terminal_firsts += 1;
        }
        let channel = match c {
            None => Channel::Inbox,
            Some(c) => Channel::Campaign(campaign(c)),
        };
        let accepted = Accepted::for_tests(account(a), channel, CredentialSource::Header);
        let mut session = ServerSession::new(accepted, self.session_config.clone(), self.now);
        let mut allowed = Vec::new();
        let revoked = subscribed.revoked.is_some();
        if let Some(code) = subscribed.revoked {
            match code {
                CloseCode::Unauthorized => self.report.admitted_4401 += 1,
                _ => self.report.admitted_4403 += 1,
            }
            if let Err(e) = session.revoke(code, self.now) {
                panic!("admitted revoked with {code:?}, which a session refuses: {e}");
            }
        } else if let Some(first) = subscribed.first {
            allowed.push((first.bytes().clone(), first.class()));
            let result = session.enqueue(first, self.now);
            assert_eq!(result, Ok(()), "a new session refused its first event");
        }
        self.conns.push(Conn {
            id: subscribed.id,
            account: a,
            key,
            session,
            subscribed: true,
            revoked,
            allowed,
            received: Vec::new(),
        });
        self.live.push(index);
    }

    fn unsubscribe(&mut self, i: usize) {
        let was = self.conns[i].subscribed;
        let left = self.table.unsubscribe(self.conns[i].id);
        assert_eq!(left.removed, was, "unsubscribe of connection {i}");
        if !was {
            assert!(!left.closed, "a stream closed by an unknown connection");
            return;
        }
        self.live.retain(|&j| j != i);
        let conn = &mut self.conns[i];
        conn.subscribed = false;
        let key = conn.key.clone();
        if conn.session.state() != SessionState::Closed {
            conn.session.handle_transport_closed(self.now);
        }
        let last = self.subscribers(&key).is_empty();
        assert_eq!(left.closed, last, "closed: the last subscriber left");
    }

    /// Queues a delivery's event for its recipients, after checking them against the model.
    fn fan_out(&mut self, key: &StreamKey, delivery: Delivery<usize>) {
        let mut recipients = delivery.recipients;
        recipients.sort_unstable();
        assert_eq!(
            recipients,
            self.subscribers(key),
            "the recipients of a delivery to {key:?}"
        );
        self.report.deliveries += 1;
        if !recipients.is_empty() {
            self.report.fanouts += 1;
        }
        for i in recipients {
            let conn = &mut self.conns[i];
            let result = conn.session.enqueue(delivery.event.clone(), self.now);
            if conn.revoked {
                assert!(
                    result.is_err(),
                    "a revoked connection's session took an event"
                );
            } else {
                conn.allowed
                    .push((delivery.event.bytes().clone(), delivery.event.class()));
            }
        }
        self.cache(key, &delivery.event);
    }

    /// The model's side of a delivery accepted for `key`: a campaign keeps its latest
    /// `progress` or terminal event, the least recently updated beyond the capacity forgotten.
    fn cache(&mut self, key: &StreamKey, event: &EncodedEvent) {
        let StreamKey::Campaign(id) = key else {
            return;
        };
        if !matches!(event.class(), EventClass::Progress | EventClass::Terminal) {
            return;
        }
        let Some(c) = CAMPAIGNS.iter().position(|name| *name == id.as_str()) else {
            panic!("a delivery to an unknown campaign {id}");
        };
        self.campaigns[c] = CampaignModel {
            cached: Some(event.bytes().clone()),
            finished: event.class() == EventClass::Terminal,
        };
        self.lru.retain(|&other| other != c);
        self.lru.push_back(c);
        while self.lru.len() > self.config.last_event_cache {
            let Some(oldest) = self.lru.pop_front() else {
                break;
            };
            self.campaigns[oldest] = CampaignModel::default();
            self.report.evictions += 1;
        }
    }

    /// The refusal the stream itself gives: a finished campaign takes nothing.
    fn expect_stream(&self, key: &StreamKey) -> Result<(), PublishError> {
        match key {
            StreamKey::Campaign(id)
                if CAMPAIGNS
                    .iter()
                    .position(|name| *name == id.as_str())
                    .is_some_and(|c| self.campaigns[c].finished) =>
            {
                Err(PublishError::Finished {
                    campaign: id.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Compares a publish's answer with the model's and fans out what went out.
    fn published(
        &mut self,
        key: &StreamKey,
        result: Result<Delivery<usize>, PublishError>,
        expected: Result<EncodedEvent, PublishError>,
    ) {
        match (result, expected) {
            (Ok(delivery), Ok(event)) => {
                assert_eq!(delivery.event, event, "the delivery's event");
                self.fan_out(key, delivery);
            }
            (Err(error), Err(expected)) => {
                assert_eq!(error, expected, "publish refused for the wrong reason");
                if matches!(error, PublishError::Finished { .. }) {
                    self.report.refused_finished += 1;
                } else {
                    self.report.refused_invalid += 1;
                }
            }
            (result, expected) => panic!("publish answered {result:?}, expected {expected:?}"),
        }
    }

    fn within_bound(&self, event: EncodedEvent) -> Result<EncodedEvent, PublishError> {
        let max = self.config.publish.max_event_bytes;
        if event.len() > max {
            return Err(PublishError::TooLarge {
                len: event.len(),
                max,
            });
        }
        Ok(event)
    }

    fn publish_inbox(&mut self, a: usize, kind: InboxKind, pad: u8) {
        let event = inbox_event(kind, self.counter, pad);
        let key = key(a, None);
        let expected = match &event {
            InboxEvent::Unknown(unknown) => Err(PublishError::UnknownType {
                kind: unknown.kind.clone(),
            }),
            known => self.within_bound(known.encode()),
        }
        .and_then(|event| self.expect_stream(&key).map(|()| event));
        let result = self.table.publish_inbox(&account(a), &event, self.now);
        self.published(&key, result, expected);
    }

    fn publish_campaign(&mut self, c: usize, kind: CampaignKind, about: Option<u8>, pad: u8) {
        let id = about.map_or(CAMPAIGNS[c], campaign_name);
        let event = campaign_event(kind, id, self.counter, pad);
        let key = key(0, Some(c));
        let expected = if let CampaignEvent::Unknown(unknown) = &event {
            Err(PublishError::UnknownType {
                kind: unknown.kind.clone(),
            })
        } else if id != CAMPAIGNS[c] {
            Err(PublishError::CampaignMismatch {
                target: campaign(c),
                found: CampaignId::new(id).unwrap_or_else(|_| panic!("valid id {id:?}")),
            })
        } else {
            self.within_bound(event.encode())
        }
        .and_then(|event| self.expect_stream(&key).map(|()| event));
        let result = self.table.publish_campaign(&campaign(c), &event, self.now);
        self.published(&key, result, expected);
    }

    fn deliver_relayed(&mut self, target: Target, relayed: &Relayed) {
        let (key, id) = match target {
            Target::Inbox { account: a } => (key(usize::from(a) % ACCOUNTS, None), CAMPAIGNS[0]),
            Target::Campaign { campaign: c } => {
                let c = usize::from(c) % CAMPAIGNS.len();
                (key(0, Some(c)), CAMPAIGNS[c])
            }
        };
        let bytes = Bytes::from(relayed.build(id, self.counter));
        let max = self.config.publish.max_event_bytes;
        let expected = expect_relayed(&key, &bytes, max);
        let validated = validate_relayed(&key, bytes.clone(), &self.config.publish);
        let event = match (validated, expected) {
            (Ok(event), Ok((class, newer))) => {
                check_accepted_relayed(event.bytes(), max);
                assert_eq!(event.bytes(), &bytes, "validate_relayed changed the bytes");
                assert_eq!(event.class(), class, "the class of relayed bytes");
                if newer {
                    assert_eq!(class, EventClass::Ordinary, "a newer type must be ordinary");
                    self.report.relayed_newer += 1;
                }
                self.report.relayed_accepted += 1;
                event
            }
            (Err(error), Err(expected)) => {
                assert_eq!(
                    error, expected,
                    "relayed bytes refused for the wrong reason"
                );
                self.report.relayed_refused += 1;
                return;
            }
            (validated, expected) => panic!(
                "validate_relayed answered {validated:?}, expected {expected:?} for {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        };
        let expected = self.expect_stream(&key).map(|()| event.clone());
        let result = self.table.deliver(&key, event, self.now);
        self.published(&key, result, expected);
    }

    fn revoke(&mut self, revoked: Revoked) {
        // `remember` prunes the memory first, then records the revocation.
        self.last_prune = self.now;
        self.revocations.push((self.now, revoked));
        let (mut targets, expected, code) = match revoked {
            Revoked::Account(a) => {
                let targets = self.table.revoke_account(&account(a), self.now);
                let expected: Vec<usize> = self
                    .sorted_live()
                    .into_iter()
                    .filter(|&i| self.conns[i].account == a)
                    .collect();
                (targets, expected, CloseCode::Unauthorized)
            }
            Revoked::Campaign(c) => {
                let targets = self.table.revoke_campaign(&campaign(c), self.now);
                (
                    targets,
                    self.subscribers(&key(0, Some(c))),
                    CloseCode::Forbidden,
                )
            }
        };
        targets.sort_unstable();
        assert_eq!(targets, expected, "the connections of {revoked:?}");
        for i in targets {
            let conn = &mut self.conns[i];
            if let Err(e) = conn.session.revoke(code, self.now) {
                panic!("a session refused {code:?}: {e}");
            }
            conn.revoked = true;
            self.report.revoked += 1;
        }
    }

    /// The table against the model, after every operation.
    fn check_table(&self) {
        let config = &self.config;
        let registry = self.table.registry();
        assert_eq!(registry.total(), self.live.len(), "connections counted");
        assert!(self.live.len() <= config.max_connections, "over the total");
        assert_eq!(registry.is_shutting_down(), self.shut_down);
        for a in 0..ACCOUNTS {
            let of_account = self
                .live
                .iter()
                .filter(|&&i| self.conns[i].account == a)
                .count();
            assert_eq!(registry.account_connections(&account(a)), of_account);
            assert!(of_account <= config.max_connections_per_account);
        }
        assert_eq!(
            self.table.cached_campaigns(),
            self.lru.len(),
            "cached campaigns"
        );
        assert!(self.lru.len() <= config.last_event_cache);
        let mut held = 0;
        for key in &self.keys {
            let subscribers = self.subscribers(key);
            let model = key
                .campaign()
                .and_then(|id| CAMPAIGNS.iter().position(|name| *name == id.as_str()))
                .map(|c| &self.campaigns[c]);
            let keeps = model.is_some_and(|m| m.cached.is_some() || m.finished);
            let Some(stream) = self.table.stream(key) else {
                assert!(
                    subscribers.is_empty() && !keeps,
                    "the table dropped {key:?} (subscribers {subscribers:?})"
                );
                continue;
            };
            assert!(
                !subscribers.is_empty() || keeps,
                "the table keeps an idle stream {key:?}"
            );
            held += 1;
            let mut handles: Vec<usize> = stream
                .subscribers()
                .iter()
                .map(|&(id, i)| {
                    assert_eq!(self.conns[i].id, id, "a subscriber's id and handle differ");
                    i
                })
                .collect();
            handles.sort_unstable();
            assert_eq!(handles, subscribers, "the subscribers of {key:?}");
            assert_eq!(stream.len(), subscribers.len());
            assert_eq!(
                stream.cached().map(EncodedEvent::bytes),
                model.and_then(|m| m.cached.as_ref()),
                "the event {key:?} keeps"
            );
            assert_eq!(
                stream.is_finished(),
                model.is_some_and(|m| m.finished),
                "whether {key:?} is finished"
            );
            if stream.is_finished() {
                assert_eq!(
                    stream.cached().map(EncodedEvent::class),
                    Some(EventClass::Terminal)
                );
            }
        }
        assert_eq!(self.table.stream_count(), held, "streams held");
        assert!(self.table.stream_count() <= self.live.len() + self.table.cached_campaigns());
        let remembered = registry.remembered_revocations();
        assert!(remembered <= config.max_remembered_revocations);
        assert_eq!(remembered, self.remembered(), "revocations remembered");
    }

    /// Drains everything, judges every connection's deliveries, then lets every connection go:
    /// only the cached campaigns' streams may remain.
    fn finish(&mut self) {
        self.drain_all();
        for conn in &self.conns {
            conn.check_deliveries();
        }
        self.report.causes = self
            .conns
            .iter()
            .map(|conn| conn.session.close_cause())
            .collect();
        for i in self.sorted_live() {
            self.unsubscribe(i);
        }
        self.check_table();
        assert_eq!(self.table.registry().total(), 0);
        assert_eq!(self.table.stream_count(), self.table.cached_campaigns());
    }
}
