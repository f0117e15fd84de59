//! B1: the event codec vs plain `#[derive(Serialize, Deserialize)]` structs of the same shape
//! vs `serde_json::Value`, for each of the ten event types, both ways.
//!
//! `cargo bench -p misar-proto --bench codec`
//!
//! Groups are `encode/<type>` and `decode/<type>`, each with `misar`, `derive` and `value`;
//! throughput is in bytes of the encoded event. All three decode the same bytes (ours). Our
//! encode includes turning the buffer into the shared `Bytes`; the derive peer stops at its
//! `Vec<u8>`, so the comparison leans against us. Our decode also validates timestamps and
//! campaign ids and dispatches on `type`, which the derive structs do not.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use misar_proto::close::ChannelKind;
use misar_proto::event::{
    Bounce, BounceType, CampaignCompleted, CampaignStarted, Cancelled, Complaint, Completed,
    EmailReceived, Event, Failed, Progress, Timestamp, Unsubscribe, decode_campaign, decode_inbox,
};
use misar_proto::route::CampaignId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

// The peers: what a team writes by hand, one struct per type, the type as a plain field.

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DEmailReceived {
    #[serde(rename = "type")]
    kind: String,
    from: String,
    subject: String,
    received_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DBounce {
    #[serde(rename = "type")]
    kind: String,
    email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bounce_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    campaign_id: Option<String>,
    bounced_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DComplaint {
    #[serde(rename = "type")]
    kind: String,
    email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    campaign_id: Option<String>,
    complained_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DUnsubscribe {
    #[serde(rename = "type")]
    kind: String,
    email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    campaign_id: Option<String>,
    unsubscribed_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DCampaignStarted {
    #[serde(rename = "type")]
    kind: String,
    campaign_id: String,
    campaign_name: String,
    total: u64,
    started_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DCampaignCompleted {
    #[serde(rename = "type")]
    kind: String,
    campaign_id: String,
    campaign_name: String,
    sent: u64,
    delivered: u64,
    opened: u64,
    completed_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DProgress {
    #[serde(rename = "type")]
    kind: String,
    campaign_id: String,
    sent: u64,
    total: u64,
    delivered: u64,
    bounced: u64,
    opened: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DCompleted {
    #[serde(rename = "type")]
    kind: String,
    campaign_id: String,
    sent: u64,
    delivered: u64,
    bounced: u64,
    opened: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DFailed {
    #[serde(rename = "type")]
    kind: String,
    campaign_id: String,
    error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed_at: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DCancelled {
    #[serde(rename = "type")]
    kind: String,
    campaign_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cancelled_at: Option<String>,
}

const CAMPAIGN: &str = "3f6c2a9e-8d41-4b7a-9c55-1e2f7a0b6d13";
const AT: &str = "2026-05-27T10:15:00.123Z";

fn ts() -> Timestamp {
    Timestamp::parse(AT).unwrap()
}

fn id() -> CampaignId {
    CampaignId::new(CAMPAIGN).unwrap()
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// Each type: our event and the derive peer holding the same data.
fn codec(c: &mut Criterion) {
    run(
        c,
        EmailReceived::new(
            s("Ana Souza <ana.souza@example.com>"),
            s("Re: Q3 planning \u{2014} agenda and notes"),
            ts(),
        )
        .with_message_id(s("<CAF=x7k2Qp@mail.example.com>"))
        .with_to(s("team@misar.io"))
        .into(),
        DEmailReceived {
            kind: s("email_received"),
            from: s("Ana Souza <ana.souza@example.com>"),
            subject: s("Re: Q3 planning \u{2014} agenda and notes"),
            received_at: s(AT),
            message_id: Some(s("<CAF=x7k2Qp@mail.example.com>")),
            to: Some(s("team@misar.io")),
        },
    );
    run(
        c,
        Bounce::new(s("no.such.user@example.org"), ts())
            .with_bounce_type(BounceType::Hard)
            .with_reason(s(
                "550 5.1.1 The email account that you tried to reach does not exist",
            ))
            .with_campaign_id(id())
            .into(),
        DBounce {
            kind: s("bounce"),
            email: s("no.such.user@example.org"),
            bounce_type: Some(s("hard")),
            reason: Some(s(
                "550 5.1.1 The email account that you tried to reach does not exist",
            )),
            campaign_id: Some(s(CAMPAIGN)),
            bounced_at: s(AT),
        },
    );
    run(
        c,
        Complaint::new(s("annoyed@example.net"), ts())
            .with_campaign_id(id())
            .into(),
        DComplaint {
            kind: s("complaint"),
            email: s("annoyed@example.net"),
            campaign_id: Some(s(CAMPAIGN)),
            complained_at: s(AT),
        },
    );
    run(
        c,
        Unsubscribe::new(s("leaving@example.net"), ts())
            .with_campaign_id(id())
            .into(),
        DUnsubscribe {
            kind: s("unsubscribe"),
            email: s("leaving@example.net"),
            campaign_id: Some(s(CAMPAIGN)),
            unsubscribed_at: s(AT),
        },
    );
    run(
        c,
        CampaignStarted::new(id(), s("May Newsletter"), 10_000, ts()).into(),
        DCampaignStarted {
            kind: s("campaign_started"),
            campaign_id: s(CAMPAIGN),
            campaign_name: s("May Newsletter"),
            total: 10_000,
            started_at: s(AT),
        },
    );
    run(
        c,
        CampaignCompleted::new(id(), s("May Newsletter"), 10_000, 9_855, 2_340, ts()).into(),
        DCampaignCompleted {
            kind: s("campaign_completed"),
            campaign_id: s(CAMPAIGN),
            campaign_name: s("May Newsletter"),
            sent: 10_000,
            delivered: 9_855,
            opened: 2_340,
            completed_at: s(AT),
        },
    );
    run(
        c,
        Progress::new(id(), 2_500, 10_000, 2_480, 20, 450).into(),
        DProgress {
            kind: s("progress"),
            campaign_id: s(CAMPAIGN),
            sent: 2_500,
            total: 10_000,
            delivered: 2_480,
            bounced: 20,
            opened: 450,
        },
    );
    run(
        c,
        Completed::new(id(), 10_000, 9_855, 145, 2_340)
            .with_completed_at(ts())
            .into(),
        DCompleted {
            kind: s("completed"),
            campaign_id: s(CAMPAIGN),
            sent: 10_000,
            delivered: 9_855,
            bounced: 145,
            opened: 2_340,
            completed_at: Some(s(AT)),
        },
    );
    run(
        c,
        Failed::new(
            id(),
            s("SMTP relay refused the connection: 421 too many connections"),
        )
        .with_sent(120)
        .with_failed_at(ts())
        .into(),
        DFailed {
            kind: s("failed"),
            campaign_id: s(CAMPAIGN),
            error: s("SMTP relay refused the connection: 421 too many connections"),
            sent: Some(120),
            failed_at: Some(s(AT)),
        },
    );
    run(
        c,
        Cancelled::new(id())
            .with_sent(4_000)
            .with_cancelled_at(ts())
            .into(),
        DCancelled {
            kind: s("cancelled"),
            campaign_id: s(CAMPAIGN),
            sent: Some(4_000),
            cancelled_at: Some(s(AT)),
        },
    );
}

/// Benchmarks one type: ours, the derive peer holding the same data, and `Value`.
fn run<T: Serialize + DeserializeOwned>(c: &mut Criterion, event: Event, derive: T) {
    {
        let bytes = event.encode().bytes().clone();
        // Same shape, checked: the derive peer writes exactly our bytes.
        assert_eq!(
            serde_json::to_vec(&derive).unwrap(),
            bytes.as_ref(),
            "{}",
            event.type_name()
        );
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let name = event.type_name().to_owned();
        let channel = event.channel();

        let mut group = c.benchmark_group(format!("encode/{name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("misar", |b| b.iter(|| black_box(&event).encode()));
        group.bench_function("derive", |b| {
            b.iter(|| serde_json::to_vec(black_box(&derive)).unwrap())
        });
        group.bench_function("value", |b| {
            b.iter(|| serde_json::to_vec(black_box(&value)).unwrap())
        });
        group.finish();

        let mut group = c.benchmark_group(format!("decode/{name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        match channel {
            ChannelKind::Inbox => {
                group.bench_function("misar", |b| b.iter(|| decode_inbox(black_box(&bytes))))
            }
            ChannelKind::Campaign => {
                group.bench_function("misar", |b| b.iter(|| decode_campaign(black_box(&bytes))))
            }
        };
        group.bench_function("derive", |b| {
            b.iter(|| serde_json::from_slice::<T>(black_box(&bytes)))
        });
        group.bench_function("value", |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&bytes)))
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
