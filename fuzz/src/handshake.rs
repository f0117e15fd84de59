//! `handshake`: an arbitrary request head plus arbitrary hook answers → the pre-upgrade
//! decision (§2.1–§2.3).
//!
//! Input: five control bytes, then a request head in the text form of [`crate::request`].
//! The control bytes are read modulo the number of choices, so the digits `0`–`3` select
//! choices directly in hand-written seeds:
//!
//! | byte | choice |
//! |---|---|
//! | 0 | rejection style: `Http`, `CloseAfterUpgrade`, `Auto` |
//! | 1 | `Origin` allowlist: none, two origins, empty |
//! | 2 | key-check hook: a table of two keys, approve any key, unknown key, hook fails |
//! | 3 | ownership hook: a table of two campaigns, grant, deny, hook fails |
//! | 4 | mount prefix: `/mail/ws`, `/`, `/realtime` |
//!
//! Checked: [`Step::Accepted`] only when the key-check hook approved exactly the key the
//! request carries (as [`extract_credentials`] reads it) for the account the session gets,
//! and, for a campaign, the ownership hook granted that account that campaign; questions are
//! asked only of requests that passed the method, route, origin and credential checks, in
//! that order, with the offered subprotocols checked between origin and credentials (§2.12:
//! 400 for a `misar.bearer.` entry without `misar.v1`, or a `Sec-WebSocket-Protocol` that is
//! not visible ASCII), then the §2.11 resume value (400 for several values, the query and the
//! header disagreeing, or bad syntax; an accepted request carries the one it asked for); an
//! accepted or close-after-upgrade request echoes `misar.v1` exactly
//! when it offered it; every rejection has the reason, status and delivery §2.3 gives it (a
//! subprotocol client is a browser for `Auto`); a response body is JSON with
//! `Cache-Control: no-store` and never repeats a key.

use http::header::{CACHE_CONTROL, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use http::{Method, StatusCode, Version};
use misar_proto::auth::{AccountId, ApiKey, CredentialSource, extract_credentials};
use misar_proto::handshake::{
    self, BadRequest, HandshakeConfig, RejectAction, Rejected, Rejection, RejectionStyle, Step,
};
use misar_proto::resume::extract_resume;
use misar_proto::route::{CampaignId, Channel, Routes};

use crate::{credentials, request};

const KEYS: [(&str, &str); 2] = [("msk_alice_key", "alice"), ("msk_bob_key", "bob")];
const CAMPAIGNS: [(&str, &str); 2] = [
    ("spring-sale", "alice"),
    ("11111111-1111-4111-8111-111111111111", "bob"),
];
const ORIGINS: [&str; 2] = ["https://app.example.com", "HTTPS://Other.Example"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Table,
    Approve,
    Refuse,
    Fail,
}

impl Hook {
    fn from_byte(b: u8) -> Self {
        match b % 4 {
            0 => Hook::Table,
            1 => Hook::Approve,
            2 => Hook::Refuse,
            _ => Hook::Fail,
        }
    }
}

/// What the hooks were asked and answered.
#[derive(Debug, Default)]
struct Record {
    approved: Option<(ApiKey, AccountId)>,
    granted: Option<(AccountId, CampaignId)>,
    auth_asked: u32,
    ownership_asked: u32,
    last: Option<Rejection>,
}

/// The target's body.
pub fn run(data: &[u8]) {
    let control = |i: usize| data.get(i).copied().unwrap_or(0);
    let style = match control(0) % 3 {
        0 => RejectionStyle::Http,
        1 => RejectionStyle::CloseAfterUpgrade,
        _ => RejectionStyle::Auto,
    };
    let mut config = HandshakeConfig::new().with_rejection_style(style);
    match control(1) % 3 {
        0 => {}
        1 => config = config.with_allowed_origins(ORIGINS),
        _ => config = config.with_allowed_origins(Vec::<String>::new()),
    }
    let auth_hook = Hook::from_byte(control(2));
    let ownership_hook = Hook::from_byte(control(3));
    config = config.with_routes(match control(4) % 3 {
        0 => Routes::default(),
        1 => Routes::new("/"),
        _ => Routes::new("/realtime"),
    });
    let head = request::parse(data.get(5..).unwrap_or_default());
    let parts = &head.parts;

    // What the decision depends on, computed independently.
    let method_ok = parts.method == Method::GET
        || (parts.method == Method::CONNECT && parts.version == Version::HTTP_2);
    let route = config.routes.resolve(parts.uri.path());
    let origin_ok = origin_allowed(&config, parts);
    let offered = offered_protocols(parts);
    let echo = match offered {
        Ok((true, _)) => Some("misar.v1"),
        _ => None,
    };
    let protocols_ok = matches!(offered, Ok((v1, bearers)) if v1 || bearers == 0);
    let credentials = extract_credentials(parts);
    let resume = extract_resume(parts);

    let mut record = Record::default();
    let mut step = handshake::start(&config, parts);
    for round in 0.. {
        assert!(round < 3, "the decision must end within three steps");
        step = match step {
            Step::NeedsAuthentication(question) => {
                assert_eq!(round, 0, "the key-check hook is asked first, once");
                record.auth_asked += 1;
                assert!(
                    method_ok && origin_ok && protocols_ok && resume.is_ok(),
                    "asked about a request that fails earlier checks"
                );
                assert_eq!(route.as_ref(), Ok(question.channel()));
                let Ok(credentials) = &credentials else {
                    panic!("hook asked about a request without valid credentials");
                };
                assert_eq!(question.key(), &credentials.key);
                assert_eq!(question.credential_source(), credentials.source);
                let account = match auth_hook {
                    Hook::Table => KEYS
                        .iter()
                        .find(|(key, _)| question.key().ct_eq_str(key))
                        .map(|(_, account)| AccountId::from(*account)),
                    Hook::Approve => Some(AccountId::from(format!(
                        "acct-{}",
                        question.key().expose().len()
                    ))),
                    Hook::Refuse | Hook::Fail => None,
                };
                match (auth_hook, account) {
                    (Hook::Fail, _) => {
                        record.last = Some(Rejection::HookFailed);
                        Step::Rejected(question.hook_failed())
                    }
                    (_, Some(account)) => {
                        record.approved = Some((question.key().clone(), account.clone()));
                        question.authenticated(account)
                    }
                    (_, None) => {
                        record.last = Some(Rejection::UnknownKey);
                        Step::Rejected(question.unknown_key())
                    }
                }
            }
            Step::NeedsOwnership(question) => {
                record.ownership_asked += 1;
                let Some((_, account)) = &record.approved else {
                    panic!("ownership asked before the key was approved");
                };
                assert_eq!(question.account(), account);
                let Ok(Channel::Campaign(campaign)) = &route else {
                    panic!("ownership asked for {route:?}");
                };
                assert_eq!(question.campaign(), campaign);
                if let Ok(credentials) = &credentials {
                    assert_eq!(question.credential_source(), credentials.source);
                }
                let owned = match ownership_hook {
                    Hook::Table => CAMPAIGNS.iter().any(|(id, owner)| {
                        question.campaign().as_str() == *id && question.account().as_str() == *owner
                    }),
                    Hook::Approve => true,
                    Hook::Refuse | Hook::Fail => false,
                };
                if ownership_hook == Hook::Fail {
                    record.last = Some(Rejection::HookFailed);
                    Step::Rejected(question.hook_failed())
                } else if owned {
                    record.granted =
                        Some((question.account().clone(), question.campaign().clone()));
                    Step::Accepted(question.grant())
                } else {
                    record.last = Some(Rejection::NotOwned);
                    Step::Rejected(question.deny())
                }
            }
            Step::Accepted(accepted) => {
                let Some((key, account)) = &record.approved else {
                    panic!("Accepted without the key-check hook's approval");
                };
                let Ok(credentials) = &credentials else {
                    panic!("Accepted without valid credentials");
                };
                assert_eq!(key, &credentials.key, "Accepted for another key");
                assert_eq!(accepted.account(), account);
                assert_eq!(accepted.credential_source(), credentials.source);
                assert_eq!(route.as_ref(), Ok(accepted.channel()));
                assert_eq!(accepted.subprotocol(), echo, "the echo of misar.v1");
                assert_eq!(
                    Ok(accepted.resume().cloned()),
                    resume,
                    "the resume value the request asked for"
                );
                match accepted.channel() {
                    Channel::Campaign(campaign) => {
                        assert_eq!(accepted.campaign(), Some(campaign));
                        assert_eq!(
                            record.granted.as_ref(),
                            Some(&(account.clone(), campaign.clone())),
                            "Accepted on a campaign without the ownership hook's grant"
                        );
                    }
                    _ => {
                        assert_eq!(accepted.campaign(), None);
                        assert_eq!(record.ownership_asked, 0);
                    }
                }
                break;
            }
            Step::Rejected(rejected) => {
                let expected = if !method_ok {
                    Rejection::MethodNotAllowed
                } else if let Err(not_found) = &route {
                    Rejection::NotFound(not_found.clone())
                } else if !origin_ok {
                    Rejection::OriginRefused
                } else if offered.is_err() {
                    Rejection::BadRequest(BadRequest::MalformedProtocols)
                } else if !protocols_ok {
                    Rejection::BadRequest(BadRequest::BearerWithoutProtocol)
                } else if let Err(error) = &resume {
                    Rejection::BadRequest(BadRequest::Resume(*error))
                } else if let Err(error) = &credentials {
                    Rejection::Unauthenticated(error.clone())
                } else {
                    match record.last.clone() {
                        Some(reason) => reason,
                        None => panic!("rejected after the hooks said yes: {rejected:?}"),
                    }
                };
                assert_eq!(rejected.reason(), &expected);
                check_rejection(rejected, style, &credentials, parts, echo);
                break;
            }
        };
    }
    assert!(record.auth_asked <= 1 && record.ownership_asked <= 1);
}

/// Whether `misar.v1` is offered and how many `misar.bearer.` entries are (§2.12), read
/// directly; `Err` when a `Sec-WebSocket-Protocol` value is not visible ASCII.
fn offered_protocols(parts: &http::request::Parts) -> Result<(bool, usize), ()> {
    let mut v1 = false;
    let mut bearers = 0;
    for value in parts.headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let text = value.to_str().map_err(|_| ())?;
        for entry in text.split(',').map(|e| e.trim_matches([' ', '\t'])) {
            if entry == "misar.v1" {
                v1 = true;
            } else if entry.starts_with("misar.bearer.") {
                bearers += 1;
            }
        }
    }
    Ok((v1, bearers))
}

/// The `Origin` allowlist as [`HandshakeConfig::allowed_origins`] documents it.
fn origin_allowed(config: &HandshakeConfig, parts: &http::request::Parts) -> bool {
    let Some(allowed) = &config.allowed_origins else {
        return true;
    };
    let values: Vec<_> = parts.headers.get_all(ORIGIN).iter().collect();
    match values.as_slice() {
        [] => true,
        [value] => value.to_str().is_ok_and(|origin| {
            let origin = origin.trim_matches([' ', '\t']);
            allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
        }),
        _ => false,
    }
}

fn check_rejection(
    rejected: Rejected,
    style: RejectionStyle,
    credentials: &Result<misar_proto::auth::Credentials, misar_proto::auth::CredentialError>,
    parts: &http::request::Parts,
    echo: Option<&'static str>,
) {
    let reason = rejected.reason().clone();
    let status = rejected.status();
    let (expected_status, close_code) = match &reason {
        Rejection::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, None),
        Rejection::NotFound(_) => (StatusCode::NOT_FOUND, None),
        Rejection::OriginRefused => (StatusCode::FORBIDDEN, None),
        Rejection::Unauthenticated(_) | Rejection::UnknownKey => {
            (StatusCode::FORBIDDEN, Some(4401))
        }
        Rejection::NotOwned => (StatusCode::FORBIDDEN, Some(4403)),
        Rejection::HookFailed => (StatusCode::SERVICE_UNAVAILABLE, None),
        Rejection::BadRequest(_) => (StatusCode::BAD_REQUEST, None),
        other => panic!("unexpected rejection {other:?}"),
    };
    assert_eq!(status, expected_status, "{reason:?}");
    assert_eq!(reason.close_code().map(|c| c.as_u16()), close_code);

    // Where the failing credentials were, for `Auto`.
    let place = match (&reason, credentials) {
        (Rejection::Unauthenticated(error), _) => error.place(),
        (_, Ok(credentials)) => Some(credentials.source),
        (_, Err(_)) => None,
    };
    let after_upgrade = close_code.is_some()
        && match style {
            RejectionStyle::Http => false,
            RejectionStyle::CloseAfterUpgrade => true,
            _ => matches!(
                place,
                Some(CredentialSource::Query | CredentialSource::Subprotocol)
            ),
        };

    let mut secrets = credentials::candidates(parts);
    if let Ok(credentials) = credentials {
        secrets.push(credentials.key.expose().to_owned());
    }
    match rejected.action() {
        RejectAction::UpgradeThenClose(close) => {
            assert!(
                after_upgrade,
                "{reason:?} in {style:?} closed after the upgrade"
            );
            assert_eq!(Some(close.code().as_u16()), close_code);
            assert_eq!(close.subprotocol(), echo, "the echo of misar.v1");
        }
        RejectAction::Respond(response) => {
            assert!(!after_upgrade, "{reason:?} in {style:?} answered over HTTP");
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers().get(CACHE_CONTROL).map(|v| v.as_bytes()),
                Some(&b"no-store"[..])
            );
            let body: serde_json::Value = match serde_json::from_slice(response.body()) {
                Ok(body) => body,
                Err(e) => panic!("rejection body is not JSON: {e}"),
            };
            assert!(body.get("error").is_some_and(serde_json::Value::is_string));
            assert_eq!(
                body.get("closeCode").and_then(serde_json::Value::as_u64),
                close_code.map(u64::from)
            );
            let text = String::from_utf8_lossy(response.body());
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "body repeats a key: {text}"
                );
            }
        }
        other => panic!("unexpected action {other:?}"),
    }
}
