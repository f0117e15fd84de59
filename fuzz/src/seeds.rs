//! The seed corpora, generated: `cargo run --example make_seeds` writes them to
//! `fuzz/seeds/<target>/<name>`, and `tests/seeds.rs` checks the committed files are exactly
//! these (and still pass every check).

use crate::client_session::{Body, ClientOp, ClientSetup, Frame};
use crate::encode;
use crate::samples;
use crate::server_session::{Class, Serve, ServerOp, ServerSetup, Unit};
use crate::streams::{CampaignKind, Edit, InboxKind, Relayed, StreamsOp, StreamsSetup, Target};

/// One seed file.
#[derive(Clone, Debug)]
pub struct Seed {
    /// The target it seeds.
    pub target: &'static str,
    /// Its file name.
    pub name: String,
    /// Its content.
    pub bytes: Vec<u8>,
}

fn seed(target: &'static str, name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Seed {
    Seed {
        target,
        name: name.into(),
        bytes: bytes.into(),
    }
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    out.extend(close_frame());
    out.extend(credentials());
    out.extend(handshake());
    out.extend(event_decode());
    out.extend(server_session());
    out.extend(client_session());
    out.extend(streams());
    out
}

fn close_frame() -> Vec<Seed> {
    use misar_proto::close::CloseCode;
    let mut out = Vec::new();
    for code in [
        1000u16, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        1015, 0, 999, 1004, 2999, 3000, 4000, 4401, 4403, 4999, 5000, 65535,
    ] {
        let reason = CloseCode::from_wire(code)
            .map(CloseCode::default_reason)
            .unwrap_or("");
        let mut bytes = code.to_be_bytes().to_vec();
        bytes.extend_from_slice(reason.as_bytes());
        out.push(seed("close_frame", format!("code-{code}"), bytes));
    }
    out.push(seed("close_frame", "empty", Vec::new()));
    out.push(seed("close_frame", "one-byte", vec![0x03]));
    let mut long = 1001u16.to_be_bytes().to_vec();
    long.extend_from_slice("é".repeat(100).as_bytes());
    out.push(seed("close_frame", "reason-multibyte-over-limit", long));
    let mut exact = 1000u16.to_be_bytes().to_vec();
    exact.extend_from_slice(&[b'a'; 122]);
    exact.extend_from_slice("€".as_bytes());
    out.push(seed("close_frame", "reason-straddles-limit", exact));
    let mut invalid = 4401u16.to_be_bytes().to_vec();
    invalid.extend_from_slice(&[0xff, 0xfe, b'x', 0xc3]);
    out.push(seed("close_frame", "reason-invalid-utf8", invalid));
    out
}

const UPGRADE: &str = "Host: api.misar.io\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n";

/// Typical and awkward request heads (shared by `credentials` and `handshake`).
fn heads() -> Vec<(&'static str, String)> {
    let long_key = format!("msk_{}", "k".repeat(252));
    let too_long = format!("msk_{}", "k".repeat(253));
    vec![
        (
            "inbox-bearer",
            format!("GET /mail/ws/inbox HTTP/1.1\r\n{}Authorization: Bearer msk_live_0123456789abcd\r\n\r\n", UPGRADE.replace('\n', "\r\n")),
        ),
        ("inbox-token", "GET /mail/ws/inbox?token=msk_live_0123456789abcd HTTP/1.1\n".into()),
        (
            "campaign-bearer",
            "GET /mail/ws/campaigns/11111111-1111-4111-8111-111111111111 HTTP/1.1\nAuthorization: Bearer msk_bob_key\n".into(),
        ),
        (
            "campaign-percent-encoded",
            "GET /mail/ws/campaigns/spring%2Dsale?a=1&token=msk_alice_key&b HTTP/1.1\n".into(),
        ),
        (
            "both-same",
            "GET /mail/ws/inbox?token=msk_same HTTP/1.1\nAuthorization: Bearer msk_same\n".into(),
        ),
        (
            "both-different",
            "GET /mail/ws/inbox?token=msk_one HTTP/1.1\nAuthorization: Bearer msk_two\n".into(),
        ),
        (
            "two-headers",
            "GET /mail/ws/inbox HTTP/1.1\nAuthorization: Bearer msk_a\nAuthorization: Bearer msk_a\n".into(),
        ),
        ("two-tokens", "GET /mail/ws/inbox?token=msk_a&token=msk_a HTTP/1.1\n".into()),
        (
            "scheme-case-and-tabs",
            "GET /mail/ws/inbox HTTP/1.1\nAuthorization:  \tbEaReR \t msk_tabs_and_spaces\t \n".into(),
        ),
        ("basic-scheme", "GET /mail/ws/inbox HTTP/1.1\nAuthorization: Basic dXNlcjpwYXNz\n".into()),
        ("bearer-alone", "GET /mail/ws/inbox HTTP/1.1\nAuthorization: Bearer\n".into()),
        (
            "encoded-token-name",
            "GET /mail/ws/inbox?%74oken=msk%5Fabc&Token=msk_other HTTP/1.1\n".into(),
        ),
        ("token-plus", "GET /mail/ws/inbox?token=msk_a+b HTTP/1.1\n".into()),
        ("token-empty", "GET /mail/ws/inbox?token=&token HTTP/1.1\n".into()),
        (
            "header-obs-text",
            "GET /mail/ws/inbox HTTP/1.1\nAuthorization: Bearer msk_\u{e9}t\u{e9}\n".into(),
        ),
        (
            "key-252",
            format!("GET /mail/ws/inbox HTTP/1.1\nAuthorization: Bearer {long_key}\n"),
        ),
        ("key-253", format!("GET /mail/ws/inbox?token={too_long} HTTP/1.1\n")),
        ("no-credentials", format!("GET /mail/ws/inbox HTTP/1.1\n{UPGRADE}")),
        (
            "outside-prefix",
            "GET /other/inbox HTTP/1.1\nAuthorization: Bearer msk_alice_key\n".into(),
        ),
        (
            "campaign-bad-id",
            "GET /mail/ws/campaigns/a%2Fb HTTP/1.1\nAuthorization: Bearer msk_alice_key\n".into(),
        ),
        (
            "origin-allowed",
            "GET /mail/ws/inbox HTTP/1.1\nOrigin: https://APP.example.com\nAuthorization: Bearer msk_alice_key\n".into(),
        ),
        (
            "origin-refused",
            "GET /mail/ws/inbox?token=msk_alice_key HTTP/1.1\nOrigin: https://evil.example\n".into(),
        ),
        ("post", "POST /mail/ws/inbox HTTP/1.1\nAuthorization: Bearer msk_alice_key\n".into()),
        (
            "connect-h2",
            "CONNECT /mail/ws/inbox HTTP/2\n:protocol: websocket\nAuthorization: Bearer msk_alice_key\n".into(),
        ),
        ("root-inbox", "GET /inbox?token=msk_alice_key HTTP/1.1\n".into()),
        (
            "realtime-campaign",
            "GET /realtime/campaigns/spring-sale HTTP/1.1\nAuthorization: Bearer msk_alice_key\n".into(),
        ),
        ("absolute-uri", "GET wss://api.misar.io/mail/ws/inbox?token=msk_alice_key HTTP/1.1\n".into()),
        (
            "subprotocol",
            "GET /mail/ws/inbox HTTP/1.1\nSec-WebSocket-Protocol: misar.v1, misar.bearer.msk_alice_key\n".into(),
        ),
        (
            "subprotocol-campaign-split",
            "GET /mail/ws/campaigns/spring-sale HTTP/1.1\nSec-WebSocket-Protocol: chat,\tmisar.v1 \nSec-WebSocket-Protocol: misar.bearer.msk_alice_key\n".into(),
        ),
        (
            "subprotocol-without-v1",
            "GET /mail/ws/inbox HTTP/1.1\nSec-WebSocket-Protocol: misar.bearer.msk_alice_key\n".into(),
        ),
        (
            "subprotocol-two-bearers",
            "GET /mail/ws/inbox HTTP/1.1\nSec-WebSocket-Protocol: misar.v1, misar.bearer.msk_a, misar.bearer.msk_a\n".into(),
        ),
        (
            "subprotocol-and-token-differ",
            "GET /mail/ws/inbox?token=msk_bob_key HTTP/1.1\nSec-WebSocket-Protocol: misar.v1, misar.bearer.msk_alice_key\n".into(),
        ),
        (
            "subprotocol-v1-alone",
            "GET /mail/ws/inbox HTTP/1.1\nSec-WebSocket-Protocol: misar.v1\nAuthorization: Bearer msk_bob_key\n".into(),
        ),
        (
            "subprotocol-obs-text",
            "GET /mail/ws/inbox HTTP/1.1\nSec-WebSocket-Protocol: misar.v1, misar.bearer.msk_\u{e9}\n".into(),
        ),
        (
            "resume-new-header",
            "GET /mail/ws/inbox HTTP/1.1\nAuthorization: Bearer msk_alice_key\nMisar-Resume: new\n".into(),
        ),
        (
            "resume-position-query",
            "GET /mail/ws/campaigns/spring-sale?resume=e_1-x%3A18446744073709551615&token=msk_alice_key HTTP/1.1\n".into(),
        ),
        (
            "resume-both-agree",
            "GET /mail/ws/inbox?resume=e1:7 HTTP/1.1\nAuthorization: Bearer msk_alice_key\nMisar-Resume:  e1:7 \n".into(),
        ),
        (
            "resume-both-differ",
            "GET /mail/ws/inbox?resume=e1:7 HTTP/1.1\nAuthorization: Bearer msk_alice_key\nMisar-Resume: e1:8\nMisar-Resume: new\n".into(),
        ),
        (
            "resume-bad-offsets",
            "GET /mail/ws/inbox?resume=e1:018446744073709551616&resume=:-1 HTTP/1.1\nAuthorization: Bearer msk_alice_key\n".into(),
        ),
    ]
}

fn credentials() -> Vec<Seed> {
    heads()
        .into_iter()
        .map(|(name, head)| seed("credentials", name, head))
        .collect()
}

fn handshake() -> Vec<Seed> {
    // Control bytes: style, origin list, key hook, ownership hook, prefix (digits 0-3).
    let pick = |name: &str| {
        heads()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, head)| head)
            .unwrap_or_default()
    };
    let cases: [(&str, &str, &str); 36] = [
        ("accept-inbox-table", "00000", "inbox-bearer"),
        ("accept-campaign-table", "00000", "campaign-bearer"),
        ("campaign-not-owned", "00000", "campaign-percent-encoded"),
        (
            "campaign-owned-by-table",
            "00100",
            "campaign-percent-encoded",
        ),
        ("approve-any-inbox", "00100", "inbox-token"),
        ("unknown-key-http", "00200", "inbox-bearer"),
        ("unknown-key-close", "10200", "inbox-bearer"),
        ("unknown-key-auto-query", "20200", "inbox-token"),
        ("unknown-key-auto-header", "20200", "inbox-bearer"),
        ("key-hook-fails", "00300", "inbox-bearer"),
        ("ownership-denied-close", "10120", "campaign-bearer"),
        ("ownership-hook-fails", "00130", "campaign-bearer"),
        ("ownership-granted", "00110", "campaign-bearer"),
        ("conflicting-auto", "20000", "both-different"),
        ("several-tokens-auto", "20000", "two-tokens"),
        ("no-credentials-close", "10000", "no-credentials"),
        ("origin-allowed", "01000", "origin-allowed"),
        ("origin-refused", "01000", "origin-refused"),
        ("origin-empty-list", "02000", "origin-allowed"),
        ("method-post", "00000", "post"),
        ("connect-h2", "00100", "connect-h2"),
        ("root-prefix", "00101", "root-inbox"),
        ("realtime-prefix", "00112", "realtime-campaign"),
        ("not-found", "00000", "campaign-bad-id"),
        ("subprotocol-accept", "00000", "subprotocol"),
        ("subprotocol-unknown-auto", "20200", "subprotocol"),
        (
            "subprotocol-campaign-close",
            "10110",
            "subprotocol-campaign-split",
        ),
        ("subprotocol-without-v1", "00000", "subprotocol-without-v1"),
        (
            "subprotocol-two-bearers-auto",
            "20000",
            "subprotocol-two-bearers",
        ),
        (
            "subprotocol-token-differ-auto",
            "20000",
            "subprotocol-and-token-differ",
        ),
        ("subprotocol-v1-alone", "00000", "subprotocol-v1-alone"),
        ("resume-new-header", "00000", "resume-new-header"),
        ("resume-position-query", "00000", "resume-position-query"),
        ("resume-both-agree", "00000", "resume-both-agree"),
        ("resume-both-differ", "00000", "resume-both-differ"),
        ("resume-bad-offsets", "00000", "resume-bad-offsets"),
    ];
    cases
        .iter()
        .map(|(name, control, head)| {
            let mut bytes = control.as_bytes().to_vec();
            bytes.extend_from_slice(pick(head).as_bytes());
            seed("handshake", *name, bytes)
        })
        .collect()
}

fn event_decode() -> Vec<Seed> {
    let mut out: Vec<Seed> = samples::frames()
        .iter()
        .enumerate()
        .map(|(i, frame)| seed("event_decode", format!("frame-{i:02}"), frame.clone()))
        .collect();
    for (i, text) in [
        "2026-05-27T10:15:00Z",
        "2024-02-29T23:59:60.123456789+05:30",
        "2026-13-01T00:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        out.push(seed(
            "event_decode",
            format!("timestamp-{i}"),
            text.as_bytes(),
        ));
    }
    out
}

fn server(name: &str, setup: ServerSetup, ops: &[ServerOp]) -> Seed {
    seed("server_session", name, encode::input(&setup, ops))
}

/// The scenarios of the server session's seeds.
pub fn server_scenarios() -> Vec<(&'static str, ServerSetup, Vec<ServerOp>)> {
    use ServerOp::*;
    let typical = ServerSetup::typical;
    let secs = |amount| Advance {
        amount,
        unit: Unit::Seconds,
    };
    let small_queue = ServerSetup {
        max_queued_events: 3,
        max_queued_bytes: 40,
        ..typical(Serve::Campaign)
    };
    let fast = ServerSetup {
        ping_interval_ms: 10,
        pong_timeout_ms: 5,
        close_grace_ms: 0,
        burst: 2,
        refill_ms: 3,
        max_client_message: 16,
        ..typical(Serve::Inbox)
    };
    vec![
        (
            "inbox-events-heartbeat-shutdown",
            typical(Serve::Inbox),
            vec![
                EnqueueEvent { sample: 0 },
                EnqueueEvent { sample: 1 },
                secs(30),
                UntilDeadline,
                Pong { len: 0 },
                EnqueueEvent { sample: 5 },
                secs(30),
                Timeout,
                Pong { len: 4 },
                Shutdown,
                PeerClose {
                    code: Some(1001),
                    reason_len: 0,
                },
            ],
        ),
        (
            "campaign-progress-coalesces-then-terminal",
            typical(Serve::Campaign),
            vec![
                Hold,
                Enqueue {
                    class: Class::Progress,
                    len: 20,
                },
                Enqueue {
                    class: Class::Ordinary,
                    len: 10,
                },
                Enqueue {
                    class: Class::Progress,
                    len: 30,
                },
                Enqueue {
                    class: Class::Progress,
                    len: 25,
                },
                Drain { max: 1 },
                Enqueue {
                    class: Class::Terminal,
                    len: 12,
                },
                Enqueue {
                    class: Class::Ordinary,
                    len: 12,
                },
                Hold,
                PeerClose {
                    code: Some(1000),
                    reason_len: 3,
                },
            ],
        ),
        (
            "heartbeat-timeout-then-grace",
            typical(Serve::Inbox),
            vec![secs(30), Timeout, secs(30), Timeout, secs(5), UntilDeadline],
        ),
        (
            "slow-consumer-overflow",
            small_queue,
            vec![
                Hold,
                Enqueue {
                    class: Class::Ordinary,
                    len: 10,
                },
                Enqueue {
                    class: Class::Progress,
                    len: 10,
                },
                Enqueue {
                    class: Class::Ordinary,
                    len: 10,
                },
                Enqueue {
                    class: Class::Progress,
                    len: 20,
                },
                Enqueue {
                    class: Class::Ordinary,
                    len: 1,
                },
                Drain { max: 0 },
                Hold,
                TransportClosed,
            ],
        ),
        (
            "client-limits-fast-clock",
            fast,
            vec![
                Ping { len: 3 },
                Text { len: 4 },
                Advance {
                    amount: 3,
                    unit: Unit::Millis,
                },
                Binary { len: 16 },
                Text { len: 1 },
                UntilDeadline,
                UntilDeadline,
            ],
        ),
        (
            "message-too-big",
            typical(Serve::Inbox),
            vec![Text { len: 4097 }, UntilDeadline],
        ),
        (
            "ping-too-big",
            typical(Serve::Campaign),
            vec![
                Ping { len: 126 },
                PeerClose {
                    code: Some(1002),
                    reason_len: 0,
                },
            ],
        ),
        (
            "revoke-refused-then-accepted",
            typical(Serve::Inbox),
            vec![
                EnqueueEvent { sample: 3 },
                Revoke { code: 1000 },
                Revoke { code: 4403 },
                Revoke { code: 4401 },
                secs(6),
                Timeout,
            ],
        ),
        (
            "application-close-and-late-clock",
            typical(Serve::Campaign),
            vec![
                Hold,
                Rewind { ms: 500 },
                Enqueue {
                    class: Class::Ordinary,
                    len: 8,
                },
                Close {
                    code: 4000,
                    reason_len: 60,
                },
                Hold,
                Rewind { ms: 9000 },
                PeerClose {
                    code: None,
                    reason_len: 0,
                },
            ],
        ),
        (
            "peer-closes-with-reserved-code",
            typical(Serve::Inbox),
            vec![
                PeerClose {
                    code: Some(1005),
                    reason_len: 200,
                },
                TransportClosed,
            ],
        ),
        (
            "transport-drops",
            typical(Serve::Campaign),
            vec![
                EnqueueEvent { sample: 6 },
                Hold,
                EnqueueEvent { sample: 6 },
                TransportClosed,
                Hold,
                Shutdown,
            ],
        ),
        (
            "rejected-4401",
            typical(Serve::Rejected4401),
            vec![
                EnqueueEvent { sample: 0 },
                Ping { len: 1 },
                PeerClose {
                    code: Some(4401),
                    reason_len: 0,
                },
            ],
        ),
        (
            "rejected-4403-silent-peer",
            typical(Serve::Rejected4403),
            vec![secs(5), Timeout],
        ),
    ]
}

fn server_session() -> Vec<Seed> {
    server_scenarios()
        .into_iter()
        .map(|(name, setup, ops)| server(name, setup, &ops))
        .collect()
}

/// The scenarios of the client session's seeds.
pub fn client_scenarios() -> Vec<(&'static str, ClientSetup, Vec<ClientOp>)> {
    use ClientOp::*;
    let typical = ClientSetup::typical;
    let secs = |amount| Advance {
        amount,
        unit: Unit::Seconds,
    };
    let sample = |index| Text {
        frame: Frame::Sample { index },
    };
    let resuming = |campaign| ClientSetup {
        resume: true,
        ..typical(campaign)
    };
    let resume = |epoch, offset, recovered| Text {
        frame: Frame::Resume {
            epoch,
            offset,
            recovered,
        },
    };
    let at = |index, offset| Text {
        frame: Frame::WithOffset { index, offset },
    };
    vec![
        (
            "resume-across-reconnects",
            resuming(None),
            vec![
                Request,
                Accept,
                resume(0, 0, true),
                at(0, 3),
                at(4, 9),
                TransportClosed,
                Request,
                Accept,
                resume(0, 9, true),
                at(17, 12),
                ServerClose {
                    code: Some(1001),
                    reason_len: 0,
                },
                Request,
                Accept,
                resume(1, 40, false),
                at(0, 41),
                TransportClosed,
                Request,
            ],
        ),
        (
            "resume-unanswered-and-broken",
            resuming(Some(0)),
            vec![
                Request,
                Accept,
                Text {
                    frame: Frame::Progress { sent: 2 },
                },
                TransportClosed,
                Request,
                Accept,
                resume(3, 1, true),
                at(0, 5),
                TransportClosed,
                Request,
            ],
        ),
        (
            "inbox-events-reconnect-close",
            typical(None),
            vec![
                Request,
                Accept,
                sample(0),
                sample(4),
                Ping { len: 2 },
                secs(40),
                sample(17),
                Binary { len: 3 },
                ServerClose {
                    code: Some(1001),
                    reason_len: 10,
                },
                Request,
                ConnectFailed,
                Request,
                Refuse {
                    status: 503,
                    body: Body::Sample { index: 2 },
                },
                Accept,
                Pong { len: 0 },
                Close,
                ServerClose {
                    code: Some(1000),
                    reason_len: 0,
                },
            ],
        ),
        (
            "campaign-progress-then-completed",
            typical(Some(0)),
            vec![
                Request,
                Accept,
                Text {
                    frame: Frame::Progress { sent: 10 },
                },
                Text {
                    frame: Frame::Terminal { kind: 0 },
                },
                ServerClose {
                    code: Some(1000),
                    reason_len: 0,
                },
                Request,
            ],
        ),
        (
            "campaign-terminal-without-server-close",
            typical(Some(1)),
            vec![
                Accept,
                Text {
                    frame: Frame::Terminal { kind: 1 },
                },
                secs(5),
                Timeout,
                secs(5),
                UntilDeadline,
            ],
        ),
        (
            "refused-403-stops",
            ClientSetup {
                query_auth: true,
                ..typical(Some(2))
            },
            vec![
                Request,
                Refuse {
                    status: 403,
                    body: Body::Sample { index: 1 },
                },
                Accept,
                Request,
            ],
        ),
        (
            "silent-server-declared-dead",
            ClientSetup {
                ping_interval_ms: 100,
                pong_timeout_ms: 50,
                ..typical(None)
            },
            vec![
                Accept,
                Advance {
                    amount: 149,
                    unit: Unit::Millis,
                },
                Timeout,
                Ping { len: 125 },
                UntilDeadline,
                Accept,
                UntilDeadline,
            ],
        ),
        (
            "revoked-4401-mid-session",
            typical(None),
            vec![
                Accept,
                sample(2),
                ServerClose {
                    code: Some(4401),
                    reason_len: 12,
                },
                ConnectFailed,
            ],
        ),
        (
            "invalid-frames-and-codes",
            ClientSetup {
                max_message: 64,
                answer_pings: false,
                ..typical(Some(0))
            },
            vec![
                Accept,
                Text {
                    frame: Frame::Cut { index: 6, at: 20 },
                },
                Text {
                    frame: Frame::Junk {
                        len: 70,
                        byte: b'{',
                    },
                },
                sample(1),
                Ping { len: 4 },
                ServerClose {
                    code: Some(1006),
                    reason_len: 0,
                },
                Accept,
                ServerClose {
                    code: None,
                    reason_len: 0,
                },
                Refuse {
                    status: 429,
                    body: Body::Junk {
                        len: 5000,
                        byte: b' ',
                    },
                },
            ],
        ),
        (
            "query-auth-odd-url",
            ClientSetup {
                url: 2,
                query_auth: true,
                ..typical(Some(1))
            },
            vec![Request, Accept, TransportClosed, Request],
        ),
        (
            "url-with-token-refused",
            ClientSetup {
                url: 4,
                ..typical(None)
            },
            vec![Request, Close, Request],
        ),
    ]
}

fn client_session() -> Vec<Seed> {
    client_scenarios()
        .into_iter()
        .map(|(name, setup, ops)| seed("client_session", name, encode::input(&setup, &ops)))
        .collect()
}

/// Index in [`samples::frames`] of the encoded `progress` of campaign `c-42`.
pub const PROGRESS_FRAME: u8 = 10;
/// Index in [`samples::frames`] of the first protocol example (pretty-printed).
pub const PRETTY_FRAME: u8 = 0;

/// The scenarios of the fan-out table's seeds.
pub fn streams_scenarios() -> Vec<(&'static str, StreamsSetup, Vec<StreamsOp>)> {
    use StreamsOp::*;
    let typical = StreamsSetup::typical;
    let sub = |account, campaign, mark| Subscribe {
        account,
        campaign,
        mark,
    };
    let publish = |campaign, kind| PublishCampaign {
        campaign,
        kind,
        about: None,
        pad: 0,
    };
    let inbox = |account, kind, pad| PublishInbox { account, kind, pad };
    let relay = |campaign, bytes| Deliver {
        target: Target::Campaign { campaign },
        bytes,
    };
    let newer = |name, campaign, n| Relayed::Newer { name, campaign, n };
    let sample = |index, edit| Relayed::Sample { index, edit };
    vec![
        (
            // A terminal event races a stray progress (published and relayed) and a
            // cancellation: the campaign is finished, all three are refused, and the late
            // joiner gets the terminal event first.
            "finished-race",
            typical(),
            vec![
                sub(0, Some(0), None),
                TakeMark,
                publish(0, CampaignKind::Progress),
                DrainAll,
                sub(1, Some(0), Some(0)),
                publish(0, CampaignKind::Completed),
                publish(0, CampaignKind::Progress),
                relay(
                    0,
                    Relayed::Campaign {
                        kind: CampaignKind::Progress,
                        about: None,
                        pad: 0,
                    },
                ),
                publish(0, CampaignKind::Cancelled),
                sub(2, Some(0), None),
                DrainAll,
                Reap,
            ],
        ),
        (
            // Handshakes whose hooks ran before a revocation (an old mark) are admitted
            // revoked (4401 for the account, 4403 for the campaign); then the revocation memory
            // forgets by age and by count, and older marks are refused as stale.
            "revoke-race-old-mark",
            StreamsSetup {
                max_revocations: 2,
                ..typical()
            },
            vec![
                sub(0, None, None),
                sub(1, Some(1), None),
                TakeMark,
                RevokeAccount { account: 0 },
                inbox(0, InboxKind::Email, 0),
                sub(0, None, Some(0)),
                RevokeCampaign { campaign: 1 },
                sub(2, Some(1), Some(0)),
                sub(2, Some(1), None),
                publish(1, CampaignKind::Progress),
                DrainAll,
                Reap,
                Advance {
                    amount: 11,
                    unit: Unit::Seconds,
                },
                sub(1, None, Some(0)),
                TakeMark,
                RevokeAccount { account: 2 },
                RevokeAccount { account: 1 },
                RevokeCampaign { campaign: 3 },
                sub(0, None, Some(0)),
                sub(0, Some(3), None),
                DrainAll,
            ],
        ),
        (
            // A cache of two campaigns: a finished campaign is evicted by two others, forgets
            // that it finished and takes a progress again; a late joiner of an evicted
            // campaign gets nothing first.
            "eviction",
            StreamsSetup {
                cache: 2,
                ..typical()
            },
            vec![
                sub(0, Some(0), None),
                publish(0, CampaignKind::Completed),
                publish(1, CampaignKind::Progress),
                PublishCampaign {
                    campaign: 2,
                    kind: CampaignKind::Failed,
                    about: None,
                    pad: 3,
                },
                publish(0, CampaignKind::Progress),
                sub(1, Some(0), None),
                publish(3, CampaignKind::Cancelled),
                sub(2, Some(1), None),
                DrainAll,
                Unsubscribe { conn: 0 },
                Unsubscribe { conn: 0 },
            ],
        ),
        (
            // The cache off and a 120-byte bound: a terminal event does not stick, and
            // unknown types, oversized events and campaign mismatches are refused.
            "cache-off-small-events",
            StreamsSetup {
                cache: 0,
                max_event_bytes: Some(120),
                ..typical()
            },
            vec![
                sub(0, Some(0), None),
                sub(0, None, None),
                publish(0, CampaignKind::Completed),
                publish(0, CampaignKind::Progress),
                PublishCampaign {
                    campaign: 0,
                    kind: CampaignKind::Failed,
                    about: None,
                    pad: 200,
                },
                inbox(0, InboxKind::Email, 150),
                inbox(0, InboxKind::Unknown, 0),
                inbox(0, InboxKind::Sample { index: 1 }, 0),
                publish(0, CampaignKind::Unknown),
                PublishCampaign {
                    campaign: 0,
                    kind: CampaignKind::Progress,
                    about: Some(1),
                    pad: 0,
                },
                sub(1, Some(0), None),
                relay(0, sample(PROGRESS_FRAME, Edit::Grow { len: 40 })),
                DrainAll,
            ],
        ),
        (
            // Relayed bytes: newer types pass unchanged on both channels; known types missing
            // fields, pretty-printed, wrapped, cut, about another campaign or followed by
            // more JSON are refused; a relayed terminal event finishes the campaign.
            "relayed-newer-type",
            typical(),
            vec![
                sub(0, Some(0), None),
                sub(0, None, None),
                relay(0, newer(0, Some(0), 7)),
                Deliver {
                    target: Target::Inbox { account: 0 },
                    bytes: newer(2, None, 0),
                },
                relay(0, newer(4, Some(0), 0)),
                relay(0, sample(PROGRESS_FRAME, Edit::Keep)),
                relay(0, sample(PROGRESS_FRAME, Edit::Wrap)),
                relay(0, sample(PROGRESS_FRAME, Edit::Cut { at: 30 })),
                relay(0, sample(PRETTY_FRAME, Edit::Keep)),
                relay(1, sample(PROGRESS_FRAME, Edit::Keep)),
                Deliver {
                    target: Target::Inbox { account: 0 },
                    bytes: Relayed::Raw {
                        bytes: br#"{"type":"x"} {"y":1}"#.to_vec(),
                    },
                },
                relay(
                    0,
                    Relayed::Campaign {
                        kind: CampaignKind::Completed,
                        about: None,
                        pad: 0,
                    },
                ),
                relay(0, newer(1, Some(0), 0)),
                sub(1, Some(0), None),
                DrainAll,
            ],
        ),
        (
            // Two connections per account, three in all: refusals by account, then in total,
            // room again after an unsubscribe; after the shutdown nothing is admitted.
            "limits-and-shutdown",
            StreamsSetup {
                per_account: 2,
                total: 3,
                ..typical()
            },
            vec![
                sub(0, None, None),
                sub(0, Some(2), None),
                sub(0, None, None),
                sub(1, None, None),
                sub(2, None, None),
                Unsubscribe { conn: 0 },
                sub(2, None, None),
                inbox(2, InboxKind::Email, 0),
                inbox(1, InboxKind::Sample { index: 0 }, 0),
                DrainAll,
                Shutdown,
                sub(1, Some(3), None),
                inbox(2, InboxKind::Email, 0),
                DrainAll,
                Reap,
            ],
        ),
        (
            // Queues of two events: progress coalesces for the connection that drains, the
            // other overflows on ordinary events (1013); time passes: a ping goes unanswered
            // and the heartbeat closes the survivor, which is then reaped.
            "slow-consumer-and-time",
            StreamsSetup {
                queue: 2,
                ..typical()
            },
            vec![
                sub(0, Some(0), None),
                sub(1, Some(0), None),
                publish(0, CampaignKind::Progress),
                publish(0, CampaignKind::Progress),
                Drain { conn: 0, max: 0 },
                relay(0, newer(0, Some(0), 1)),
                relay(0, newer(0, Some(0), 2)),
                Drain { conn: 0, max: 1 },
                relay(0, newer(0, Some(0), 3)),
                Drain { conn: 0, max: 0 },
                publish(0, CampaignKind::Progress),
                Advance {
                    amount: 1,
                    unit: Unit::Minutes,
                },
                DrainAll,
                Advance {
                    amount: 45,
                    unit: Unit::Seconds,
                },
                Reap,
                DrainAll,
            ],
        ),
    ]
}

fn streams() -> Vec<Seed> {
    streams_scenarios()
        .into_iter()
        .map(|(name, setup, ops)| seed("streams", name, encode::input(&setup, &ops)))
        .collect()
}
