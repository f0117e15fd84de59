//! Unit tests: one per row of §2.1–§2.3, plus the §2.8 limits.

use super::*;
use crate::auth::{CredentialError, KeySyntaxError};
use crate::close::CloseCode;
use crate::route::{CampaignIdError, NotFound};
use http::StatusCode;

const ALICE_KEY: &str = "msk_alice_0123456789";

fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn get(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    head("GET", uri, headers)
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn needs_auth(step: Step) -> NeedsAuthentication {
    match step {
        Step::NeedsAuthentication(n) => n,
        other => panic!("expected NeedsAuthentication, got {other:?}"),
    }
}

fn needs_ownership(step: Step) -> NeedsOwnership {
    match step {
        Step::NeedsOwnership(n) => n,
        other => panic!("expected NeedsOwnership, got {other:?}"),
    }
}

fn accepted(step: Step) -> Accepted {
    match step {
        Step::Accepted(a) => a,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

fn rejected(step: Step) -> Rejected {
    match step {
        Step::Rejected(r) => r,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn respond(rejected: Rejected) -> http::Response<bytes::Bytes> {
    match rejected.action() {
        RejectAction::Respond(r) => r,
        other => panic!("expected an HTTP response, got {other:?}"),
    }
}

fn close_code(rejected: Rejected) -> CloseCode {
    match rejected.action() {
        RejectAction::UpgradeThenClose(c) => c.code(),
        other => panic!("expected a close after upgrade, got {other:?}"),
    }
}

fn json(response: &http::Response<bytes::Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).unwrap()
}

fn assert_common_headers(response: &http::Response<bytes::Bytes>) {
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["content-type"], "application/json");
}

fn campaign_id(id: &str) -> CampaignId {
    CampaignId::new(id).unwrap()
}

// §2.1 endpoints, §2.2 credentials

#[test]
fn inbox_with_header_key_is_accepted_after_the_hook() {
    let config = HandshakeConfig::default();
    let auth = bearer(ALICE_KEY);
    let step = start(&config, &get("/mail/ws/inbox", &[("authorization", &auth)]));
    let question = needs_auth(step);
    assert_eq!(question.key().expose(), ALICE_KEY);
    assert_eq!(question.credential_source(), CredentialSource::Header);
    assert_eq!(question.channel(), &Channel::Inbox);
    let ok = accepted(question.authenticated(AccountId::from("alice")));
    assert_eq!(ok.account().as_str(), "alice");
    assert_eq!(ok.channel(), &Channel::Inbox);
    assert_eq!(ok.campaign(), None);
    assert_eq!(ok.credential_source(), CredentialSource::Header);
}

#[test]
fn inbox_with_query_key_is_accepted_after_the_hook() {
    let config = HandshakeConfig::default();
    let step = start(
        &config,
        &get(&format!("/mail/ws/inbox?token={ALICE_KEY}"), &[]),
    );
    let question = needs_auth(step);
    assert_eq!(question.key().expose(), ALICE_KEY);
    assert_eq!(question.credential_source(), CredentialSource::Query);
    let ok = accepted(question.authenticated(AccountId::from("alice")));
    assert_eq!(ok.credential_source(), CredentialSource::Query);
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let config = HandshakeConfig::default();
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let auth = format!("{scheme} {ALICE_KEY}");
        let step = start(&config, &get("/mail/ws/inbox", &[("authorization", &auth)]));
        assert_eq!(needs_auth(step).key().expose(), ALICE_KEY, "{scheme}");
    }
}

#[test]
fn campaign_asks_for_ownership_then_grants() {
    let config = HandshakeConfig::default();
    let auth = bearer(ALICE_KEY);
    let step = start(
        &config,
        &get(
            "/mail/ws/campaigns/spring-sale",
            &[("authorization", &auth)],
        ),
    );
    let question = needs_auth(step);
    assert_eq!(
        question.channel(),
        &Channel::Campaign(campaign_id("spring-sale"))
    );
    let question = needs_ownership(question.authenticated(AccountId::from("alice")));
    assert_eq!(question.account().as_str(), "alice");
    assert_eq!(question.campaign().as_str(), "spring-sale");
    assert_eq!(question.credential_source(), CredentialSource::Header);
    let ok = question.grant();
    assert_eq!(ok.account().as_str(), "alice");
    assert_eq!(ok.campaign(), Some(&campaign_id("spring-sale")));
    assert_eq!(ok.channel(), &Channel::Campaign(campaign_id("spring-sale")));
}

/// Each ambiguity or malformation of §2.2 stops before the key-check hook.
#[test]
fn ambiguous_credentials_never_reach_the_hook() {
    let config = HandshakeConfig::default();
    let other = bearer("msk_other");
    let alice = bearer(ALICE_KEY);
    let cases: Vec<(http::request::Parts, CredentialError)> = vec![
        (get("/mail/ws/inbox", &[]), CredentialError::Missing),
        (
            get(
                &format!("/mail/ws/inbox?token={ALICE_KEY}"),
                &[("authorization", &other)],
            ),
            CredentialError::Conflicting,
        ),
        (
            get(
                "/mail/ws/inbox",
                &[("authorization", &alice), ("authorization", &alice)],
            ),
            CredentialError::SeveralAuthorizationHeaders,
        ),
        (
            get(
                &format!("/mail/ws/inbox?token={ALICE_KEY}&token={ALICE_KEY}"),
                &[],
            ),
            CredentialError::SeveralTokenParameters,
        ),
        (
            get("/mail/ws/inbox", &[("authorization", "Basic YWxpY2U6cHc=")]),
            CredentialError::NotBearer,
        ),
        (
            get("/mail/ws/inbox", &[("authorization", "Bearer sk_live_x")]),
            CredentialError::InvalidKey {
                at: CredentialSource::Header,
                error: KeySyntaxError::MissingPrefix,
            },
        ),
        (
            get("/mail/ws/inbox?token=msk_a.b", &[]),
            CredentialError::InvalidKey {
                at: CredentialSource::Query,
                error: KeySyntaxError::InvalidCharacter,
            },
        ),
        (
            get(
                &format!("/mail/ws/inbox?token=msk_{}", "x".repeat(253)),
                &[],
            ),
            CredentialError::InvalidKey {
                at: CredentialSource::Query,
                error: KeySyntaxError::TooLong,
            },
        ),
        (
            get("/mail/ws/inbox?token=", &[]),
            CredentialError::EmptyToken {
                at: CredentialSource::Query,
            },
        ),
    ];
    for (request, expected) in cases {
        let rejected = rejected(start(&config, &request));
        assert_eq!(
            rejected.reason(),
            &Rejection::Unauthenticated(expected.clone())
        );
        assert_eq!(rejected.status(), StatusCode::FORBIDDEN);
        let response = respond(rejected);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_common_headers(&response);
        let body = json(&response);
        assert_eq!(body["error"], "unauthorized", "{expected:?}");
        assert_eq!(body["closeCode"], 4401);
        assert_eq!(body["message"], expected.to_string());
    }
}

#[test]
fn same_key_in_both_places_is_a_header_credential() {
    let config = HandshakeConfig::default();
    let auth = bearer(ALICE_KEY);
    let step = start(
        &config,
        &get(
            &format!("/mail/ws/inbox?token={ALICE_KEY}"),
            &[("authorization", &auth)],
        ),
    );
    assert_eq!(
        needs_auth(step).credential_source(),
        CredentialSource::Header
    );
}

#[test]
fn unknown_key_is_403_unauthorized() {
    let config = HandshakeConfig::default();
    let step = start(&config, &get("/mail/ws/inbox?token=msk_nobody", &[]));
    let rejected = needs_auth(step).unknown_key();
    assert_eq!(rejected.reason(), &Rejection::UnknownKey);
    let response = respond(rejected);
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_common_headers(&response);
    assert_eq!(
        json(&response),
        serde_json::json!({"error": "unauthorized", "closeCode": 4401, "message": "unknown API key"})
    );
}

#[test]
fn not_owned_is_403_forbidden() {
    let config = HandshakeConfig::default();
    let auth = bearer(ALICE_KEY);
    let step = start(
        &config,
        &get("/mail/ws/campaigns/bobs-sale", &[("authorization", &auth)]),
    );
    let question = needs_ownership(needs_auth(step).authenticated(AccountId::from("alice")));
    let rejected = question.deny();
    assert_eq!(rejected.reason(), &Rejection::NotOwned);
    assert_eq!(rejected.reason().close_code(), Some(CloseCode::Forbidden));
    let response = respond(rejected);
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_common_headers(&response);
    let body = json(&response);
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body["closeCode"], 4403);
    assert!(body["message"].is_string());
}

/// An unknown campaign and a foreign one are answered byte for byte the same.
#[test]
fn unknown_campaign_is_indistinguishable_from_foreign() {
    let config = HandshakeConfig::default();
    let auth = bearer(ALICE_KEY);
    let deny = |path: &str| {
        let step = start(&config, &get(path, &[("authorization", &auth)]));
        let question = needs_ownership(needs_auth(step).authenticated(AccountId::from("alice")));
        question.deny().into_response()
    };
    let foreign = deny("/mail/ws/campaigns/bobs-sale");
    let unknown = deny("/mail/ws/campaigns/no-such-campaign-0000");
    assert_eq!(foreign.status(), unknown.status());
    assert_eq!(foreign.headers(), unknown.headers());
    assert_eq!(foreign.body(), unknown.body());
}

// §2.1 routing before authentication

#[test]
fn routing_is_decided_before_authentication() {
    let config = HandshakeConfig::default();
    let auth = bearer(ALICE_KEY);
    for (path, reason) in [
        ("/mail/ws/outbox", NotFound::UnknownChannel),
        ("/elsewhere/inbox", NotFound::OutsidePrefix),
        (
            "/mail/ws/campaigns/a.b",
            NotFound::CampaignId(CampaignIdError::InvalidCharacter { position: 1 }),
        ),
    ] {
        // With a valid key, with garbage, and with nothing: always 404.
        for headers in [
            vec![("authorization", auth.as_str())],
            vec![("authorization", "Basic zzz")],
            vec![],
        ] {
            let rejected = rejected(start(&config, &get(path, &headers)));
            assert_eq!(rejected.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(rejected.reason(), &Rejection::NotFound(reason.clone()));
            let response = respond(rejected);
            assert_common_headers(&response);
            assert_eq!(&response.body()[..], br#"{"error":"not_found"}"#);
        }
    }
}

#[test]
fn custom_prefix() {
    let config = HandshakeConfig::new().with_routes(Routes::new("/rt"));
    let step = start(&config, &get(&format!("/rt/inbox?token={ALICE_KEY}"), &[]));
    assert_eq!(needs_auth(step).channel(), &Channel::Inbox);
    let step = start(
        &config,
        &get(&format!("/mail/ws/inbox?token={ALICE_KEY}"), &[]),
    );
    assert_eq!(rejected(step).status(), StatusCode::NOT_FOUND);
}

#[test]
fn non_get_is_405_even_on_an_unknown_path() {
    let config = HandshakeConfig::default();
    for (method, path) in [
        ("POST", "/mail/ws/inbox"),
        ("HEAD", "/mail/ws/inbox"),
        ("PUT", "/nowhere"),
        ("CONNECT", "/mail/ws/inbox"),
    ] {
        let rejected = rejected(start(&config, &head(method, path, &[])));
        assert_eq!(rejected.reason(), &Rejection::MethodNotAllowed);
        let response = respond(rejected);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["allow"], "GET");
        assert_common_headers(&response);
        assert_eq!(&response.body()[..], br#"{"error":"method_not_allowed"}"#);
    }
}

#[test]
fn http2_extended_connect_is_a_handshake() {
    let config = HandshakeConfig::default();
    let mut request = head("CONNECT", &format!("/mail/ws/inbox?token={ALICE_KEY}"), &[]);
    request.version = http::Version::HTTP_2;
    assert_eq!(
        needs_auth(start(&config, &request)).key().expose(),
        ALICE_KEY
    );
    // GET over HTTP/2 is not refused by the core either (the WebSocket library decides).
    let mut request = get(&format!("/mail/ws/inbox?token={ALICE_KEY}"), &[]);
    request.version = http::Version::HTTP_2;
    assert!(matches!(
        start(&config, &request),
        Step::NeedsAuthentication(_)
    ));
}

// §2.2 Origin allowlist

#[test]
fn origin_allowlist() {
    let config = HandshakeConfig::new().with_allowed_origins(["https://app.example.com"]);
    let path = format!("/mail/ws/inbox?token={ALICE_KEY}");
    // Listed (any case), and absent (not a browser): pass.
    for headers in [
        vec![("origin", "https://app.example.com")],
        vec![("origin", "HTTPS://APP.EXAMPLE.COM")],
        vec![],
    ] {
        assert!(
            matches!(
                start(&config, &get(&path, &headers)),
                Step::NeedsAuthentication(_)
            ),
            "{headers:?}"
        );
    }
    // Anything else: 403 before credentials are looked at.
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "https://app.example.com.evil.example")],
        vec![("origin", "https://app.example.com:8443")],
        vec![("origin", "null")],
        vec![("origin", "")],
        vec![
            ("origin", "https://app.example.com"),
            ("origin", "https://app.example.com"),
        ],
    ] {
        let rejected = rejected(start(&config, &get(&path, &headers)));
        assert_eq!(rejected.reason(), &Rejection::OriginRefused, "{headers:?}");
        let response = respond(rejected);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_common_headers(&response);
        assert_eq!(json(&response)["error"], "origin_forbidden");
    }
    // Refused before credentials: even without any key, the answer is about the origin.
    let rejected = rejected(start(
        &config,
        &get("/mail/ws/inbox", &[("origin", "https://evil.example")]),
    ));
    assert_eq!(rejected.reason(), &Rejection::OriginRefused);
}

#[test]
fn origin_refusal_ignores_the_rejection_style() {
    let config = HandshakeConfig::new()
        .with_allowed_origins(["https://app.example.com"])
        .with_rejection_style(RejectionStyle::CloseAfterUpgrade);
    let rejected = rejected(start(
        &config,
        &get(
            &format!("/mail/ws/inbox?token={ALICE_KEY}"),
            &[("origin", "https://evil.example")],
        ),
    ));
    assert_eq!(respond(rejected).status(), StatusCode::FORBIDDEN);
}

#[test]
fn without_allowlist_any_origin_passes() {
    let config = HandshakeConfig::default();
    let step = start(
        &config,
        &get(
            &format!("/mail/ws/inbox?token={ALICE_KEY}"),
            &[("origin", "https://anything.example")],
        ),
    );
    assert!(matches!(step, Step::NeedsAuthentication(_)));
}

// §2.2 failing hooks fail closed

#[test]
fn failing_key_hook_is_503() {
    for style in [
        RejectionStyle::Http,
        RejectionStyle::CloseAfterUpgrade,
        RejectionStyle::Auto,
    ] {
        let config = HandshakeConfig::new().with_rejection_style(style);
        let step = start(
            &config,
            &get(&format!("/mail/ws/inbox?token={ALICE_KEY}"), &[]),
        );
        let rejected = needs_auth(step).hook_failed();
        assert_eq!(rejected.reason(), &Rejection::HookFailed);
        let response = respond(rejected);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_common_headers(&response);
        assert_eq!(&response.body()[..], br#"{"error":"unavailable"}"#);
    }
}

#[test]
fn failing_ownership_hook_is_503() {
    for style in [
        RejectionStyle::Http,
        RejectionStyle::CloseAfterUpgrade,
        RejectionStyle::Auto,
    ] {
        let config = HandshakeConfig::new().with_rejection_style(style);
        let step = start(
            &config,
            &get(&format!("/mail/ws/campaigns/c1?token={ALICE_KEY}"), &[]),
        );
        let question = needs_ownership(needs_auth(step).authenticated(AccountId::from("alice")));
        let response = respond(question.hook_failed());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_common_headers(&response);
    }
}

// §2.3 rejection styles

/// The three auth failures of a request whose key came from `place`, under `style`.
fn auth_failures(style: RejectionStyle, place: CredentialSource) -> [Rejected; 3] {
    let config = HandshakeConfig::new().with_rejection_style(style);
    let request = |path: &str, key: &str| match place {
        CredentialSource::Header => get(path, &[("authorization", &bearer(key))]),
        CredentialSource::Query => get(&format!("{path}?token={key}"), &[]),
        _ => get(
            path,
            &[(
                "sec-websocket-protocol",
                &format!("misar.v1, misar.bearer.{key}"),
            )],
        ),
    };
    let malformed = rejected(start(&config, &request("/mail/ws/inbox", "msk_bad.key")));
    let unknown =
        needs_auth(start(&config, &request("/mail/ws/inbox", "msk_nobody"))).unknown_key();
    let question = needs_auth(start(&config, &request("/mail/ws/campaigns/c1", ALICE_KEY)));
    let denied = needs_ownership(question.authenticated(AccountId::from("alice"))).deny();
    [malformed, unknown, denied]
}

#[test]
fn http_style_answers_403_in_every_place() {
    for place in PLACES {
        let [malformed, unknown, denied] = auth_failures(RejectionStyle::Http, place);
        for (rejected, code) in [(malformed, 4401), (unknown, 4401), (denied, 4403)] {
            let response = respond(rejected);
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert_common_headers(&response);
            assert_eq!(json(&response)["closeCode"], code);
        }
    }
}

#[test]
fn close_after_upgrade_style_closes_in_every_place() {
    for place in PLACES {
        let [malformed, unknown, denied] = auth_failures(RejectionStyle::CloseAfterUpgrade, place);
        assert_eq!(close_code(malformed), CloseCode::Unauthorized);
        assert_eq!(close_code(unknown), CloseCode::Unauthorized);
        assert_eq!(close_code(denied), CloseCode::Forbidden);
    }
}

#[test]
fn auto_style_follows_the_credential_place() {
    let [malformed, unknown, denied] =
        auth_failures(RejectionStyle::Auto, CredentialSource::Header);
    for rejected in [malformed, unknown, denied] {
        assert_eq!(respond(rejected).status(), StatusCode::FORBIDDEN);
    }
    for browser in [CredentialSource::Query, CredentialSource::Subprotocol] {
        let [malformed, unknown, denied] = auth_failures(RejectionStyle::Auto, browser);
        assert_eq!(close_code(malformed), CloseCode::Unauthorized);
        assert_eq!(close_code(unknown), CloseCode::Unauthorized);
        assert_eq!(close_code(denied), CloseCode::Forbidden);
    }
}

const PLACES: [CredentialSource; 3] = [
    CredentialSource::Header,
    CredentialSource::Query,
    CredentialSource::Subprotocol,
];

// §2.12 the key in `Sec-WebSocket-Protocol`

fn protocols(value: &str) -> [(&'static str, &str); 1] {
    [("sec-websocket-protocol", value)]
}

#[test]
fn subprotocol_key_is_a_credential_and_misar_v1_is_echoed() {
    let config = HandshakeConfig::new();
    let offer = format!("misar.v1, misar.bearer.{ALICE_KEY}");
    let question = needs_auth(start(&config, &get("/mail/ws/inbox", &protocols(&offer))));
    assert_eq!(question.key().expose(), ALICE_KEY);
    assert_eq!(question.credential_source(), CredentialSource::Subprotocol);
    let ok = accepted(question.authenticated(AccountId::from("alice")));
    assert_eq!(ok.subprotocol(), Some("misar.v1"));
    assert_eq!(ok.credential_source(), CredentialSource::Subprotocol);
    // The campaign path echoes too.
    let question = needs_auth(start(
        &config,
        &get("/mail/ws/campaigns/c1", &protocols(&offer)),
    ));
    let ok = needs_ownership(question.authenticated(AccountId::from("alice"))).grant();
    assert_eq!(ok.subprotocol(), Some("misar.v1"));
}

#[test]
fn misar_v1_alone_is_served_and_echoed_other_protocols_are_not() {
    let config = HandshakeConfig::new();
    let auth = bearer(ALICE_KEY);
    let question = needs_auth(start(
        &config,
        &get(
            "/mail/ws/inbox",
            &[
                ("authorization", &auth),
                ("sec-websocket-protocol", "chat, misar.v1"),
            ],
        ),
    ));
    let ok = accepted(question.authenticated(AccountId::from("alice")));
    assert_eq!(ok.subprotocol(), Some("misar.v1"));
    assert_eq!(ok.credential_source(), CredentialSource::Header);
    let question = needs_auth(start(
        &config,
        &get(
            "/mail/ws/inbox",
            &[("authorization", &auth), ("sec-websocket-protocol", "chat")],
        ),
    ));
    assert_eq!(
        accepted(question.authenticated(AccountId::from("a"))).subprotocol(),
        None
    );
    let question = needs_auth(start(
        &config,
        &get("/mail/ws/inbox", &[("authorization", &auth)]),
    ));
    assert_eq!(
        accepted(question.authenticated(AccountId::from("a"))).subprotocol(),
        None
    );
}

#[test]
fn bearer_entry_without_misar_v1_is_400_before_credentials() {
    for style in [
        RejectionStyle::Http,
        RejectionStyle::CloseAfterUpgrade,
        RejectionStyle::Auto,
    ] {
        let config = HandshakeConfig::new().with_rejection_style(style);
        for offer in [
            format!("misar.bearer.{ALICE_KEY}"),
            format!("chat, misar.bearer.{ALICE_KEY}"),
            format!("misar.bearer.{ALICE_KEY}, misar.bearer.msk_x"),
            "misar.bearer.".to_owned(),
        ] {
            let rejected = rejected(start(&config, &get("/mail/ws/inbox", &protocols(&offer))));
            assert_eq!(
                rejected.reason(),
                &Rejection::BadRequest(BadRequest::BearerWithoutProtocol)
            );
            let response = respond(rejected);
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            assert_common_headers(&response);
            let body = json(&response);
            assert_eq!(body["error"], "bad_request");
            assert!(body["message"].as_str().unwrap().contains("misar.v1"));
            assert!(!String::from_utf8_lossy(response.body()).contains(ALICE_KEY));
        }
    }
    // Routing still comes first.
    let config = HandshakeConfig::new();
    let offer = format!("misar.bearer.{ALICE_KEY}");
    assert_eq!(
        respond(rejected(start(
            &config,
            &get("/elsewhere", &protocols(&offer))
        )))
        .status(),
        StatusCode::NOT_FOUND
    );
    // A header that is not visible ASCII.
    let mut parts = get("/mail/ws/inbox", &[]);
    parts.headers.insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_bytes(b"misar.v1, \xE9").unwrap(),
    );
    let rejected = rejected(start(&config, &parts));
    assert_eq!(
        rejected.reason(),
        &Rejection::BadRequest(BadRequest::MalformedProtocols)
    );
    assert_eq!(respond(rejected).status(), StatusCode::BAD_REQUEST);
}

#[test]
fn subprotocol_ambiguities_are_unauthenticated_without_the_hook() {
    let config = HandshakeConfig::new().with_rejection_style(RejectionStyle::Auto);
    let cases = [
        (
            get(
                "/mail/ws/inbox",
                &protocols(&format!(
                    "misar.v1, misar.bearer.{ALICE_KEY}, misar.bearer.msk_b"
                )),
            ),
            CredentialError::SeveralBearerProtocols,
        ),
        (
            get(
                "/mail/ws/inbox?token=msk_other",
                &protocols(&format!("misar.v1, misar.bearer.{ALICE_KEY}")),
            ),
            CredentialError::ConflictingBrowserPlaces,
        ),
    ];
    for (parts, error) in cases {
        let rejected = rejected(start(&config, &parts));
        assert_eq!(rejected.reason(), &Rejection::Unauthenticated(error));
        // A browser: close 4401 after an upgrade that echoes `misar.v1`.
        match rejected.action() {
            RejectAction::UpgradeThenClose(close) => {
                assert_eq!(close.code(), CloseCode::Unauthorized);
                assert_eq!(close.subprotocol(), Some("misar.v1"));
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }
    // Header and subprotocol disagreeing: not a browser, HTTP 403.
    let auth = bearer("msk_other");
    let parts = get(
        "/mail/ws/inbox",
        &[
            ("authorization", &auth),
            (
                "sec-websocket-protocol",
                &format!("misar.v1, misar.bearer.{ALICE_KEY}"),
            ),
        ],
    );
    let rejected = rejected(start(&config, &parts));
    assert_eq!(
        rejected.reason(),
        &Rejection::Unauthenticated(CredentialError::Conflicting)
    );
    assert_eq!(respond(rejected).status(), StatusCode::FORBIDDEN);
}

#[test]
fn close_after_upgrade_echoes_only_when_offered() {
    let config = HandshakeConfig::new().with_rejection_style(RejectionStyle::CloseAfterUpgrade);
    let close = |rejected: Rejected| match rejected.action() {
        RejectAction::UpgradeThenClose(close) => close,
        other => panic!("expected a close, got {other:?}"),
    };
    let offer = "misar.v1, misar.bearer.msk_nobody";
    let unknown =
        needs_auth(start(&config, &get("/mail/ws/inbox", &protocols(offer)))).unknown_key();
    assert_eq!(close(unknown).subprotocol(), Some("misar.v1"));
    let unknown =
        needs_auth(start(&config, &get("/mail/ws/inbox?token=msk_nobody", &[]))).unknown_key();
    assert_eq!(close(unknown).subprotocol(), None);
}

#[test]
fn too_many_pending_handshakes_is_503_with_retry_after() {
    let rejected = Rejected::too_many_pending_handshakes(2);
    let response = respond(rejected);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_common_headers(&response);
    assert_eq!(json(&response)["error"], "overloaded");
}

#[test]
fn auto_style_without_credentials_or_with_header_conflict_is_http() {
    let config = HandshakeConfig::new().with_rejection_style(RejectionStyle::Auto);
    let missing = rejected(start(&config, &get("/mail/ws/inbox", &[])));
    assert_eq!(respond(missing).status(), StatusCode::FORBIDDEN);
    let other = bearer("msk_other");
    let conflict = rejected(start(
        &config,
        &get(
            &format!("/mail/ws/inbox?token={ALICE_KEY}"),
            &[("authorization", &other)],
        ),
    ));
    assert_eq!(respond(conflict).status(), StatusCode::FORBIDDEN);
    // Two `token` parameters and no header: a browser, so it gets a close code.
    let twice = rejected(start(
        &config,
        &get("/mail/ws/inbox?token=msk_a&token=msk_b", &[]),
    ));
    assert_eq!(close_code(twice), CloseCode::Unauthorized);
}

#[test]
fn close_after_upgrade_never_applies_to_non_auth_rejections() {
    let config = HandshakeConfig::new().with_rejection_style(RejectionStyle::CloseAfterUpgrade);
    let not_found = rejected(start(&config, &get("/nowhere?token=msk_a", &[])));
    assert_eq!(respond(not_found).status(), StatusCode::NOT_FOUND);
    let method = rejected(start(
        &config,
        &head("POST", "/mail/ws/inbox?token=msk_a", &[]),
    ));
    assert_eq!(respond(method).status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn into_response_is_always_http() {
    let [malformed, unknown, denied] =
        auth_failures(RejectionStyle::CloseAfterUpgrade, CredentialSource::Query);
    for (rejected, code) in [(malformed, 4401), (unknown, 4401), (denied, 4403)] {
        assert_eq!(rejected.status(), StatusCode::FORBIDDEN);
        let response = rejected.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(json(&response)["closeCode"], code);
    }
}

// §2.8 limits enforced by the adapters

#[test]
fn too_many_for_account_is_429() {
    let rejected = Rejected::too_many_for_account();
    assert_eq!(rejected.reason(), &Rejection::TooManyForAccount);
    assert_eq!(rejected.status(), StatusCode::TOO_MANY_REQUESTS);
    let response = respond(rejected);
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_common_headers(&response);
    assert_eq!(&response.body()[..], br#"{"error":"too_many_connections"}"#);
    assert!(response.headers().get("retry-after").is_none());
}

#[test]
fn too_many_connections_is_503_with_retry_after() {
    let rejected = Rejected::too_many_connections(7);
    assert_eq!(
        rejected.reason(),
        &Rejection::TooManyConnections {
            retry_after_secs: 7
        }
    );
    let response = respond(rejected);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_common_headers(&response);
    assert_eq!(json(&response)["error"], "overloaded");
}

#[test]
fn responses_never_echo_the_key() {
    let secret = "msk_do_not_echo_me_42";
    let config = HandshakeConfig::default();
    let auth = bearer(secret);
    let bodies = [
        needs_auth(start(
            &config,
            &get("/mail/ws/inbox", &[("authorization", &auth)]),
        ))
        .unknown_key()
        .into_response(),
        rejected(start(
            &config,
            &get(&format!("/mail/ws/inbox?token={secret}x."), &[]),
        ))
        .into_response(),
        rejected(start(
            &config,
            &get(
                &format!("/mail/ws/inbox?token={secret}"),
                &[("authorization", "Bearer msk_other")],
            ),
        ))
        .into_response(),
    ];
    for response in bodies {
        let body = String::from_utf8(response.body().to_vec()).unwrap();
        assert!(!body.contains("do_not_echo"), "{body}");
    }
}
