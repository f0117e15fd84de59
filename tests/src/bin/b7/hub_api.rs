//! Every call B7 makes into our hub and driver, in one place.
//!
//! Issue 12 changed this API (`Hub::subscribe` takes the `Accepted` and a revocation mark and
//! creates the session; `serve_connection(transport, feed, config)`): only [`serve`] changed
//! for the "after" measurement; the rest of B7 does not name a hub type beyond [`Hub`].

use std::future::Future;

use misar_proto::auth::AccountId;
use misar_proto::event::{CampaignEvent, InboxEvent};
use misar_proto::handshake::{self, Accepted, HandshakeConfig, Step};
use misar_proto::route::CampaignId;
use misar_proto::server::ServerConfig;
use misar_proto_tokio::hub::{Hub, HubConfig};
use misar_proto_tokio::server::{DriverConfig, serve_connection};

use crate::transport::ServerEnd;

/// How every connection is served.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// The session's settings (the library's defaults, except the ping interval).
    pub server: ServerConfig,
    /// The driver's settings (the library's defaults).
    pub driver: DriverConfig,
}

/// A hub for `connections` connections, with the library's defaults otherwise (100 per
/// account is plenty: an account holds its inbox connection and a few campaign ones).
pub fn new_hub(connections: usize) -> Hub {
    Hub::new(HubConfig {
        max_connections: connections.saturating_add(16),
        ..HubConfig::default()
    })
}

/// The pre-upgrade handshake of the core for `GET path` with `Authorization: Bearer key`,
/// as a real server runs it; the key check accepts `msk_<account>` as `<account>`'s key and
/// every campaign as owned (B7 measures the fan-out, not the authorizer).
pub fn accept(path: &str, key: &str) -> Result<Accepted, String> {
    let request = http::Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(())
        .map_err(|e| e.to_string())?;
    let (head, ()) = request.into_parts();
    let mut step = handshake::start(&HandshakeConfig::default(), &head);
    loop {
        step = match step {
            Step::NeedsAuthentication(question) => {
                let Some(account) = question.key().expose().strip_prefix("msk_") else {
                    return Err("not a bench key".into());
                };
                let account = AccountId::new(account);
                question.authenticated(account)
            }
            Step::NeedsOwnership(question) => Step::Accepted(question.grant()),
            Step::Accepted(accepted) => return Ok(accepted),
            Step::Rejected(rejected) => return Err(format!("rejected: {}", rejected.reason())),
        }
    }
}

/// Registers the accepted connection with `hub` (which creates its session, issue 12) and
/// returns the future that serves it over `transport` with the library's real driver (spawn
/// it); an error is the hub's refusal.
///
/// Before issue 12 this was `hub.subscribe(&accepted)`, `ServerSession::new(accepted, ..)`,
/// then `serve_connection(transport, session, feed, driver)`.
pub fn serve(
    hub: &Hub,
    accepted: Accepted,
    transport: ServerEnd,
    config: &ConnConfig,
) -> Result<impl Future<Output = ()> + Send + 'static, String> {
    let feed = hub
        .subscribe(accepted, hub.mark(), &config.server)
        .map_err(|e| e.to_string())?;
    let driver = config.driver.clone();
    Ok(async move {
        let _end = serve_connection(transport, feed, driver).await;
    })
}

/// Publishes to `account`'s inbox; the connections it was queued for.
pub async fn publish_inbox(hub: &Hub, account: &AccountId, event: &InboxEvent) -> usize {
    match hub.publish_inbox(account, event).await {
        Ok(report) => report.delivered,
        Err(_) => 0,
    }
}

/// Publishes to `campaign`'s subscribers; the connections it was queued for.
pub async fn publish_campaign(hub: &Hub, campaign: &CampaignId, event: &CampaignEvent) -> usize {
    match hub.publish_campaign(campaign, event).await {
        Ok(report) => report.delivered,
        Err(_) => 0,
    }
}

/// Connections the hub counts now.
pub fn connection_count(hub: &Hub) -> usize {
    hub.connection_count()
}
