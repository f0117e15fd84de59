//! Simulated activity: inbox events every few seconds, and campaigns for alice that start,
//! progress and complete, over and over, each with a fresh id.

use std::sync::Arc;
use std::time::Duration;

use misar_proto::auth::AccountId;
use misar_proto::event::{
    Bounce, BounceType, CampaignCompleted, CampaignEvent, CampaignStarted, Complaint, Completed,
    EmailReceived, InboxEvent, Progress, Unsubscribe,
};
use misar_proto::route::CampaignId;
use tokio::time::sleep;

use crate::Demo;
use crate::clock::{self, Ids};

/// Inbox events come every this many ticks.
const INBOX_EVERY: u32 = 8;
/// Ticks between two campaigns.
const CAMPAIGN_PAUSE: u32 = 4;
/// Ticks between `campaign_started` and the first progress (time for pages to subscribe).
const CAMPAIGN_LEAD: u32 = 2;
/// Progress events per campaign, one per tick.
const CAMPAIGN_STEPS: u64 = 10;

const SENDERS: [&str; 4] = [
    "carol@example.com",
    "dave@example.org",
    "erin@example.net",
    "frank@example.com",
];
const SUBJECTS: [&str; 4] = [
    "Re: Your email",
    "Quarterly numbers",
    "Lunch on Friday?",
    "Invoice #1042",
];
const CAMPAIGNS: [&str; 4] = [
    "May Newsletter",
    "Spring Sale",
    "Product Update",
    "Webinar Invite",
];

/// Runs both activities until the process ends.
pub async fn run(demo: Arc<Demo>, tick: Duration) {
    tokio::join!(inbox(Arc::clone(&demo), tick), campaigns(demo, tick));
}

async fn inbox(demo: Arc<Demo>, tick: Duration) {
    let mut ids = Ids::new();
    let mut n: usize = 0;
    loop {
        sleep(tick * INBOX_EVERY).await;
        n = n.wrapping_add(1);
        let account = AccountId::from(if n % 3 == 0 { "bob" } else { "alice" });
        let contact = SENDERS[n % SENDERS.len()].to_owned();
        let event = match n % 5 {
            0 => InboxEvent::Bounce(
                Bounce::new(contact, clock::now())
                    .with_bounce_type(if ids.below(2) == 0 {
                        BounceType::Hard
                    } else {
                        BounceType::Soft
                    })
                    .with_reason("mailbox unavailable"),
            ),
            3 => InboxEvent::Unsubscribe(Unsubscribe::new(contact, clock::now())),
            4 if ids.below(3) == 0 => InboxEvent::Complaint(Complaint::new(contact, clock::now())),
            _ => InboxEvent::EmailReceived(
                EmailReceived::new(
                    contact,
                    SUBJECTS[n % SUBJECTS.len()].to_owned(),
                    clock::now(),
                )
                .with_message_id(format!("<{}@demo.misar>", ids.uuid()))
                .with_to(format!("{account}@demo.misar")),
            ),
        };
        if let Err(e) = demo.hub.publish_inbox(&account, &event).await {
            tracing::warn!(error = %e, "simulation: inbox publish failed");
        }
    }
}

async fn campaigns(demo: Arc<Demo>, tick: Duration) {
    let alice = AccountId::from("alice");
    let mut ids = Ids::new();
    let mut n: usize = 0;
    loop {
        sleep(tick * CAMPAIGN_PAUSE).await;
        n = n.wrapping_add(1);
        let Ok(id) = CampaignId::new(&ids.uuid()) else {
            continue;
        };
        let name = format!("{} #{n}", CAMPAIGNS[n % CAMPAIGNS.len()]);
        let total = 500 + ids.below(16) * 100;
        // Owned by alice before anyone hears of it, so her campaign sockets are accepted.
        demo.add_campaign(id.clone(), alice.clone());
        let started = InboxEvent::CampaignStarted(CampaignStarted::new(
            id.clone(),
            name.clone(),
            total,
            clock::now(),
        ));
        if let Err(e) = demo.hub.publish_inbox(&alice, &started).await {
            tracing::warn!(error = %e, "simulation: publish failed");
        }
        sleep(tick * CAMPAIGN_LEAD).await;
        let (mut delivered, mut bounced, mut opened) = (0, 0, 0);
        for step in 1..=CAMPAIGN_STEPS {
            let sent = total * step / CAMPAIGN_STEPS;
            bounced = sent / 50;
            delivered = sent - bounced;
            opened = delivered / 4;
            let progress = CampaignEvent::Progress(Progress::new(
                id.clone(),
                sent,
                total,
                delivered,
                bounced,
                opened,
            ));
            if let Err(e) = demo.hub.publish_campaign(&id, &progress).await {
                tracing::warn!(error = %e, "simulation: publish failed");
            }
            sleep(tick).await;
        }
        let completed_at = clock::now();
        let completed = CampaignEvent::Completed(
            Completed::new(id.clone(), total, delivered, bounced, opened)
                .with_completed_at(completed_at.clone()),
        );
        if let Err(e) = demo.hub.publish_campaign(&id, &completed).await {
            tracing::warn!(error = %e, "simulation: publish failed");
        }
        let summary = InboxEvent::CampaignCompleted(CampaignCompleted::new(
            id.clone(),
            name,
            total,
            delivered,
            opened,
            completed_at,
        ));
        if let Err(e) = demo.hub.publish_inbox(&alice, &summary).await {
            tracing::warn!(error = %e, "simulation: publish failed");
        }
    }
}
