//! `credentials`: an arbitrary request head → credential extraction (§2.2) and routing (§2.1).
//!
//! Input: a request head in the lenient text form of [`crate::request`], e.g.
//! `GET /mail/ws/inbox?token=msk_abc HTTP/1.1\nAuthorization: Bearer msk_abc\n`.
//!
//! Checked:
//! - nothing panics;
//! - [`extract_credentials`] agrees with a direct reading of §2.2 and §2.12 (the model
//!   below): a key comes out exactly when the places that carry one (the `Authorization`
//!   header, the `misar.bearer.` subprotocol, the `token` parameter) carry the same key and no
//!   place is refused; several `Authorization` headers, `token` parameters or bearer entries,
//!   a non-Bearer scheme or a malformed key in any place yield no key;
//! - a key that comes out re-parses with [`ApiKey::parse`] (a syntactically invalid key is
//!   never returned) and is exactly the one the request carried where the source says;
//! - neither the credentials' `Debug` nor any error text shows the key;
//! - [`Routes::resolve`] under several prefixes: an inbox only at `{prefix}/inbox`, campaign
//!   ids valid, and every resolved channel's own path resolves back to it.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use misar_proto::auth::{ApiKey, CredentialSource, extract_credentials};
use misar_proto::route::{CampaignId, Channel, Routes};

use crate::request;

/// The target's body.
pub fn run(data: &[u8]) {
    let head = request::parse(data);
    check_credentials(&head.parts);
    let path = head.parts.uri.path();
    let mut prefixes = vec![Routes::default(), Routes::new("/"), Routes::new("/api/v2/")];
    // A prefix made of the path's own directory, so that odd prefixes get matched too.
    if let Some((dir, _)) = head.raw_target.rsplit_once('/') {
        prefixes.push(Routes::new(dir));
    }
    for routes in &prefixes {
        check_route(routes, path);
        check_route(routes, &head.raw_target);
    }
}

/// What §2.2 says a place yields: nothing, a refusal, or a key.
#[derive(Debug)]
enum Place {
    Absent,
    Refused,
    Key(String),
}

/// The `Authorization` place, read directly from §2.2.
fn header_place(parts: &http::request::Parts) -> Place {
    let values: Vec<_> = parts.headers.get_all(AUTHORIZATION).iter().collect();
    let value = match values.as_slice() {
        [] => return Place::Absent,
        [value] => *value,
        _ => return Place::Refused,
    };
    let Ok(text) = value.to_str() else {
        return Place::Refused;
    };
    let ws = |c: char| c == ' ' || c == '\t';
    let text = text.trim_matches(ws);
    let Some((scheme, rest)) = text.split_once(ws) else {
        return Place::Refused;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Place::Refused;
    }
    let token = rest.trim_start_matches(ws);
    if is_key(token) {
        Place::Key(token.to_owned())
    } else {
        Place::Refused
    }
}

/// The `token` place: form-decoded parameters named exactly `token`.
fn query_place(parts: &http::request::Parts) -> Place {
    let Some(query) = parts.uri.query() else {
        return Place::Absent;
    };
    let tokens: Vec<Cow<'_, str>> = form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == "token")
        .map(|(_, value)| value)
        .collect();
    match tokens.as_slice() {
        [] => Place::Absent,
        [token] if is_key(token) => Place::Key(token.to_string()),
        _ => Place::Refused,
    }
}

/// The subprotocol place (§2.12): `misar.bearer.` entries of every visible-ASCII
/// `Sec-WebSocket-Protocol` value (comma-separated, spaces and tabs trimmed).
fn subprotocol_place(parts: &http::request::Parts) -> Place {
    let entries: Vec<String> = parts
        .headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .map(|entry| entry.trim_matches([' ', '\t']))
        .filter_map(|entry| entry.strip_prefix("misar.bearer."))
        .map(str::to_owned)
        .collect();
    match entries.as_slice() {
        [] => Place::Absent,
        [key] if is_key(key) => Place::Key(key.clone()),
        _ => Place::Refused,
    }
}

/// `msk_` + 1..=252 of `[A-Za-z0-9_-]`, written out independently of the core.
fn is_key(text: &str) -> bool {
    text.strip_prefix("msk_").is_some_and(|body| {
        (1..=252).contains(&body.len())
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

fn check_credentials(parts: &http::request::Parts) {
    let result = extract_credentials(parts);
    let header = header_place(parts);
    let query = query_place(parts);
    let subprotocol = subprotocol_place(parts);
    let places = [
        (&header, CredentialSource::Header),
        (&subprotocol, CredentialSource::Subprotocol),
        (&query, CredentialSource::Query),
    ];
    let refused = places
        .iter()
        .any(|(place, _)| matches!(place, Place::Refused));
    let keys: Vec<(&String, CredentialSource)> = places
        .iter()
        .filter_map(|(place, source)| match place {
            Place::Key(key) => Some((key, *source)),
            _ => None,
        })
        .collect();
    let expected = match keys.first() {
        Some(&(key, source)) if !refused && keys.iter().all(|(other, _)| *other == key) => {
            Some((key, source))
        }
        _ => None,
    };
    match (&result, expected) {
        (Ok(credentials), Some((key, source))) => {
            assert_eq!(credentials.key.expose(), key);
            assert_eq!(credentials.source, source);
            let reparsed = ApiKey::parse(credentials.key.expose());
            assert_eq!(reparsed.as_ref(), Ok(&credentials.key));
            let shown = format!("{credentials:?} {} {}", credentials.key, credentials.source);
            assert!(!shown.contains(key.as_str()), "the key is shown: {shown}");
        }
        (Err(error), None) => {
            let text = error.to_string();
            for candidate in candidates(parts) {
                assert!(
                    !text.contains(&candidate),
                    "error text shows a key candidate: {text}"
                );
            }
            let _ = error.place();
        }
        (got, want) => panic!(
            "extract_credentials: got {got:?}, §2.2 says {want:?} (header {header:?}, query {query:?}, subprotocol {subprotocol:?})"
        ),
    }
}

/// Key-like words of the request (`msk_` followed by at least one key character), which no
/// error text may repeat.
pub(crate) fn candidates(parts: &http::request::Parts) -> Vec<String> {
    let mut texts: Vec<String> = parts
        .headers
        .get_all(AUTHORIZATION)
        .iter()
        .chain(parts.headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter())
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    if let Some(query) = parts.uri.query() {
        texts.extend(form_urlencoded::parse(query.as_bytes()).map(|(_, v)| v.into_owned()));
    }
    let mut out = Vec::new();
    for text in texts {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("msk_") {
            let word: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            if word.len() > "msk_".len() {
                out.push(word);
            }
            rest = &rest[at + "msk_".len()..];
        }
    }
    out
}

fn check_route(routes: &Routes, path: &str) {
    let prefix = routes.prefix();
    let Ok(channel) = routes.resolve(path) else {
        return;
    };
    match &channel {
        Channel::Inbox => assert_eq!(path, format!("{prefix}/inbox")),
        Channel::Campaign(id) => {
            let text = id.as_str();
            assert!(
                (1..=128).contains(&text.len()),
                "campaign id of {} bytes",
                text.len()
            );
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "campaign id {text:?}"
            );
            assert_eq!(CampaignId::new(text).as_ref(), Ok(id));
            assert!(path.starts_with(&format!("{prefix}/campaigns/")), "{path}");
        }
        other => panic!("unexpected channel {other:?}"),
    }
    assert_eq!(
        routes.resolve(&channel.path(prefix)),
        Ok(channel.clone()),
        "a channel's own path must resolve to it"
    );
}
