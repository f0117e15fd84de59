//! `POST /dev/publish/inbox/{account}` and `POST /dev/publish/campaigns/{id}`: publish a JSON
//! event to every subscriber, as the rest of a real service would.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use misar_proto::auth::AccountId;
use misar_proto::event::{DecodeError, InboxEvent, decode_campaign, decode_inbox};
use misar_proto::route::CampaignId;
use misar_proto_tokio::hub::{PublishError, PublishReport};
use serde_json::json;

use crate::Demo;

fn error(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": error, "message": message.into() })),
    )
        .into_response()
}

/// 202 with what this node knows when the publish returns (README "Running several nodes"):
/// `accepted` (the broker took the event), `delivered` (connections this call queued it for:
/// all of them in memory, none through Redis, where every node delivers when Redis hands the
/// event back), `receivingNodes` (through Redis: the nodes that had subscribers of the stream;
/// `null` in memory, where `delivered` is the whole story).
fn accepted(report: PublishReport) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "accepted": true,
            "delivered": report.delivered,
            "receivingNodes": report.receivers,
        })),
    )
        .into_response()
}

fn bad_event(e: &DecodeError) -> Response {
    match e {
        DecodeError::TooLarge { .. } => {
            error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        DecodeError::WrongChannel { .. } => {
            error(StatusCode::BAD_REQUEST, "wrong_channel", e.to_string())
        }
        _ => error(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()),
    }
}

/// The hub's refusals (§2.13) and the broker's failure as HTTP answers.
fn publish_failed(e: &PublishError) -> Response {
    use misar_proto::streams::PublishError as Refusal;
    let (status, code) = match e.refusal() {
        None => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        Some(Refusal::Finished { .. }) => (StatusCode::CONFLICT, "finished"),
        Some(Refusal::TooLarge { .. }) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        Some(Refusal::UnknownType { .. }) => (StatusCode::BAD_REQUEST, "unknown_type"),
        Some(Refusal::CampaignMismatch { .. }) => (StatusCode::BAD_REQUEST, "campaign_mismatch"),
        Some(_) => (StatusCode::BAD_REQUEST, "invalid_event"),
    };
    error(status, code, e.to_string())
}

/// `POST /dev/publish/inbox/{account}`.
pub async fn inbox(
    State(demo): State<Arc<Demo>>,
    Path(account): Path<String>,
    body: Bytes,
) -> Response {
    if !demo.authorizer.has_account(&account) {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_account",
            "no such account (the demo has alice and bob)",
        );
    }
    let event = match decode_inbox(&body) {
        Ok(InboxEvent::Unknown(unknown)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unknown_type",
                format!("`{}` is not an inbox event type", unknown.kind),
            );
        }
        Ok(event) => event,
        Err(e) => return bad_event(&e),
    };
    let account = AccountId::from(account);
    // So that hand-published campaigns can be watched: a `campaign_started` for a campaign
    // nobody owns gives it to this account.
    if let InboxEvent::CampaignStarted(started) = &event {
        let id = &started.campaign_id;
        if demo.authorizer.campaign_owner(id).is_none() {
            demo.add_campaign(id.clone(), account.clone());
        }
    }
    match demo.hub.publish_inbox(&account, &event).await {
        Ok(report) => accepted(report),
        Err(e) => publish_failed(&e),
    }
}

/// `POST /dev/publish/campaigns/{id}`.
pub async fn campaign(
    State(demo): State<Arc<Demo>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(campaign) = CampaignId::new(&id)
        .ok()
        .filter(|c| demo.authorizer.campaign_owner(c).is_some())
    else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_campaign",
            "no such campaign",
        );
    };
    let event = match decode_campaign(&body) {
        Ok(misar_proto::event::CampaignEvent::Unknown(unknown)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unknown_type",
                format!("`{}` is not a campaign event type", unknown.kind),
            );
        }
        Ok(event) => event,
        Err(e) => return bad_event(&e),
    };
    if event.campaign_id() != Some(&campaign) {
        return error(
            StatusCode::BAD_REQUEST,
            "campaign_mismatch",
            "the event's campaignId is not the campaign of the path",
        );
    }
    match demo.hub.publish_campaign(&campaign, &event).await {
        Ok(report) => accepted(report),
        Err(e) => publish_failed(&e),
    }
}
