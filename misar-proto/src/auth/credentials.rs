//! Credential extraction from a request head (§2.2).
//!
//! A request may carry its key in three places:
//! - `Authorization: Bearer <key>`: the scheme is matched ASCII-case-insensitively (RFC 7235);
//!   one or more spaces or tabs separate it from the key; whitespace around the whole value
//!   is ignored. The value must be visible ASCII (plus spaces and tabs).
//! - the query parameter `token=<key>`, decoded as `application/x-www-form-urlencoded` (the
//!   way browsers' `URLSearchParams` encode it): `%XX` is decoded and `+` means a space. A key
//!   never contains a space or a `+`, so a `+` in a token is refused as an invalid character
//!   either way; clients should percent-encode (keys need no encoding at all). The parameter
//!   name is matched exactly (`Token=` is another parameter), after percent-decoding.
//! - a `misar.bearer.<key>` entry of `Sec-WebSocket-Protocol` (§2.12), which browsers can set:
//!   `new WebSocket(url, ["misar.v1", "misar.bearer." + key])`. Entries are the
//!   comma-separated elements of every `Sec-WebSocket-Protocol` header, trimmed of spaces and
//!   tabs, matched case-sensitively (subprotocol names are). A bearer entry is only valid
//!   beside [`SUBPROTOCOL`] (`misar.v1`); the handshake refuses one without it with HTTP 400
//!   (see [`offered_protocols`]).
//!
//! Anything ambiguous is refused with a typed [`CredentialError`] before any hook could see a
//! key: several `Authorization` headers, several `token` parameters, several bearer entries,
//! keys in two places that differ, a malformed value in any place (even if another place is
//! fine). The same key in several places is accepted; its source is then the first of
//! [`CredentialSource::Header`], [`CredentialSource::Subprotocol`], [`CredentialSource::Query`]
//! that carries it.
//!
//! Work is bounded: parameters other than `token` are skipped without allocating, and a
//! `token` value that could not decode to a key of legal length is refused before decoding.

use std::fmt;

use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};

use super::{ApiKey, KEY_PREFIX, KeySyntaxError, MAX_KEY_BODY_LEN};

/// The subprotocol of this protocol (§2.12): offered by browsers beside their bearer entry,
/// and the only value a 101 ever echoes in `Sec-WebSocket-Protocol`.
pub const SUBPROTOCOL: &str = "misar.v1";

/// The prefix of a bearer entry of `Sec-WebSocket-Protocol`: `misar.bearer.<key>` (§2.12).
pub const BEARER_PROTOCOL_PREFIX: &str = "misar.bearer.";

/// Where the key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialSource {
    /// `Authorization: Bearer <key>`.
    Header,
    /// `?token=<key>`.
    Query,
    /// A `misar.bearer.<key>` entry of `Sec-WebSocket-Protocol` (browsers, §2.12).
    Subprotocol,
}

impl CredentialSource {
    /// Whether a client using this place is a browser (it cannot set `Authorization`):
    /// `Query` and `Subprotocol`.
    pub fn is_browser_place(self) -> bool {
        matches!(
            self,
            CredentialSource::Query | CredentialSource::Subprotocol
        )
    }
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialSource::Header => "Authorization header",
            CredentialSource::Query => "`token` query parameter",
            CredentialSource::Subprotocol => "`misar.bearer.` subprotocol",
        })
    }
}

/// A key and where it came from. Several places may carry the same key; the source is then the
/// first of `Header`, `Subprotocol`, `Query` that does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The key.
    pub key: ApiKey,
    /// Where it came from.
    pub source: CredentialSource,
}

/// Why a request carries no usable credentials.
///
/// Never includes any part of a key, nor anything else copied from the request (a non-Bearer
/// `Authorization` value may be a password).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// No `Authorization` header, no `token` query parameter, no bearer subprotocol.
    #[error(
        "missing credentials: send `Authorization: Bearer <key>`, `?token=<key>` or the subprotocols `misar.v1`, `misar.bearer.<key>`"
    )]
    Missing,
    /// The `Authorization` header and another place both carry a key, and the keys differ.
    #[error("the Authorization header and another place carry different keys")]
    Conflicting,
    /// The `token` query parameter and the bearer subprotocol carry different keys (and there
    /// is no `Authorization` header).
    #[error("the `token` query parameter and the bearer subprotocol carry different keys")]
    ConflictingBrowserPlaces,
    /// More than one `misar.bearer.` entry in `Sec-WebSocket-Protocol`.
    #[error("several `misar.bearer.` subprotocols")]
    SeveralBearerProtocols,
    /// More than one `Authorization` header.
    #[error("several Authorization headers")]
    SeveralAuthorizationHeaders,
    /// More than one `token` query parameter.
    #[error("several `token` query parameters")]
    SeveralTokenParameters,
    /// The `Authorization` scheme is not `Bearer`.
    #[error("the Authorization scheme is not Bearer")]
    NotBearer,
    /// The `Authorization` value holds bytes other than visible ASCII, spaces and tabs.
    #[error("the Authorization header is not visible ASCII")]
    HeaderNotVisibleAscii,
    /// The header (`Authorization:`, `Authorization: Bearer`), the parameter (`token=`,
    /// `token`) or the bearer entry (`misar.bearer.`) carries no key.
    #[error("the {at} carries no key")]
    EmptyToken {
        /// Which place was empty.
        at: CredentialSource,
    },
    /// The key is not `msk_` + 1–252 characters of `[A-Za-z0-9_-]`.
    #[error("the {at} carries an invalid key: {error}")]
    InvalidKey {
        /// Which place carried it.
        at: CredentialSource,
        /// What is wrong with it.
        error: KeySyntaxError,
    },
}

impl CredentialError {
    /// The place the failure is about, if it is about one place: `Header` for every problem
    /// involving the `Authorization` header (including [`CredentialError::Conflicting`], since
    /// only a client able to set headers can send one), `Query` for problems of the query
    /// parameter alone, `Subprotocol` for problems of the bearer entry (and for
    /// [`CredentialError::ConflictingBrowserPlaces`]: a browser), `None` for
    /// [`CredentialError::Missing`].
    ///
    /// [`RejectionStyle::Auto`](crate::handshake::RejectionStyle::Auto) uses it to decide how
    /// the client can be told.
    pub fn place(&self) -> Option<CredentialSource> {
        match self {
            CredentialError::Missing => None,
            CredentialError::Conflicting
            | CredentialError::SeveralAuthorizationHeaders
            | CredentialError::NotBearer
            | CredentialError::HeaderNotVisibleAscii => Some(CredentialSource::Header),
            CredentialError::SeveralTokenParameters => Some(CredentialSource::Query),
            CredentialError::SeveralBearerProtocols | CredentialError::ConflictingBrowserPlaces => {
                Some(CredentialSource::Subprotocol)
            }
            CredentialError::EmptyToken { at } | CredentialError::InvalidKey { at, .. } => {
                Some(*at)
            }
        }
    }
}

/// The longest legal key, in bytes.
const MAX_KEY_LEN: usize = KEY_PREFIX.len() + MAX_KEY_BODY_LEN;
/// The longest query value that could still decode to a legal key: every byte of a key may be
/// sent as a three-byte `%XX` escape.
const MAX_ENCODED_KEY_LEN: usize = MAX_KEY_LEN * 3;
/// The longest raw parameter name that could decode to `token` (each letter as `%XX`).
const MAX_ENCODED_NAME_LEN: usize = "token".len() * 3;

/// Extracts the credentials of a request head (§2.2).
///
/// ```
/// use misar_proto::auth::{extract_credentials, CredentialError, CredentialSource};
///
/// let (parts, ()) = http::Request::get("/mail/ws/inbox?token=msk_abc").body(()).unwrap().into_parts();
/// let creds = extract_credentials(&parts).unwrap();
/// assert_eq!(creds.key.expose(), "msk_abc");
/// assert_eq!(creds.source, CredentialSource::Query);
///
/// let (parts, ()) = http::Request::get("/mail/ws/inbox?token=msk_abc")
///     .header("authorization", "Bearer msk_xyz")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert_eq!(extract_credentials(&parts), Err(CredentialError::Conflicting));
/// ```
pub fn extract_credentials(parts: &http::request::Parts) -> Result<Credentials, CredentialError> {
    let header = from_header(&parts.headers)?;
    let query = match parts.uri.query() {
        Some(query) => from_query(query)?,
        None => None,
    };
    let subprotocol = from_subprotocols(&parts.headers)?;
    // Constant-time comparisons (`ApiKey`'s `==`): the keys come from the same client, but
    // there is no reason to make an exception to the rule.
    let mut found: Option<Credentials> = None;
    for (key, source) in [
        (header, CredentialSource::Header),
        (subprotocol, CredentialSource::Subprotocol),
        (query, CredentialSource::Query),
    ] {
        let Some(key) = key else { continue };
        match &found {
            None => found = Some(Credentials { key, source }),
            Some(first) if first.key == key => {}
            Some(first) if first.source == CredentialSource::Header => {
                return Err(CredentialError::Conflicting);
            }
            Some(_) => return Err(CredentialError::ConflictingBrowserPlaces),
        }
    }
    found.ok_or(CredentialError::Missing)
}

/// What a request's `Sec-WebSocket-Protocol` headers offer, as far as this protocol is
/// concerned (§2.12).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OfferedProtocols {
    /// Whether [`SUBPROTOCOL`] (`misar.v1`) is offered: the 101 then echoes it.
    pub misar_v1: bool,
    /// How many `misar.bearer.` entries are offered (a valid request has at most one, and
    /// only beside `misar.v1`).
    pub bearer_entries: usize,
}

/// The `Sec-WebSocket-Protocol` headers are not a list of visible-ASCII tokens (HTTP 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the Sec-WebSocket-Protocol header is not visible ASCII")]
pub struct MalformedProtocols;

/// Reads the offered subprotocols (every `Sec-WebSocket-Protocol` header, comma-separated
/// entries, spaces and tabs trimmed, empty entries skipped). Never copies an entry.
///
/// ```
/// use misar_proto::auth::offered_protocols;
/// let (parts, ()) = http::Request::get("/mail/ws/inbox")
///     .header("sec-websocket-protocol", "misar.v1, misar.bearer.msk_abc")
///     .body(())
///     .unwrap()
///     .into_parts();
/// let offered = offered_protocols(&parts.headers).unwrap();
/// assert!(offered.misar_v1);
/// assert_eq!(offered.bearer_entries, 1);
/// ```
pub fn offered_protocols(
    headers: &http::HeaderMap,
) -> Result<OfferedProtocols, MalformedProtocols> {
    let mut offered = OfferedProtocols::default();
    for entry in protocol_entries(headers) {
        let entry = entry?;
        if entry == SUBPROTOCOL {
            offered.misar_v1 = true;
        } else if entry.starts_with(BEARER_PROTOCOL_PREFIX) {
            offered.bearer_entries = offered.bearer_entries.saturating_add(1);
        }
    }
    Ok(offered)
}

/// The non-empty entries of every `Sec-WebSocket-Protocol` header; `Err` for a value that is
/// not visible ASCII.
fn protocol_entries(
    headers: &http::HeaderMap,
) -> impl Iterator<Item = Result<&str, MalformedProtocols>> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|value| {
            let (text, malformed) = match value.to_str() {
                Ok(text) => (text, None),
                Err(_) => ("", Some(Err(MalformedProtocols))),
            };
            text.split(',')
                .map(|entry| entry.trim_matches(is_http_whitespace))
                .filter(|entry| !entry.is_empty())
                .map(Ok)
                .chain(malformed)
        })
}

/// Spaces and tabs: the whitespace HTTP allows inside and around a field value.
fn is_http_whitespace(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The key of the single `Authorization` header, `None` if there is none.
fn from_header(headers: &http::HeaderMap) -> Result<Option<ApiKey>, CredentialError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::SeveralAuthorizationHeaders);
    }
    // `to_str` accepts exactly visible ASCII, space and tab.
    let value = value
        .to_str()
        .map_err(|_| CredentialError::HeaderNotVisibleAscii)?
        .trim_matches(is_http_whitespace);
    if value.is_empty() {
        return Err(CredentialError::EmptyToken {
            at: CredentialSource::Header,
        });
    }
    let (scheme, token) = value.split_once(is_http_whitespace).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(CredentialError::NotBearer);
    }
    let token = token.trim_start_matches(is_http_whitespace);
    if token.is_empty() {
        return Err(CredentialError::EmptyToken {
            at: CredentialSource::Header,
        });
    }
    ApiKey::parse(token)
        .map(Some)
        .map_err(|error| CredentialError::InvalidKey {
            at: CredentialSource::Header,
            error,
        })
}

/// The key of the single `token` parameter, `None` if there is none.
fn from_query(query: &str) -> Result<Option<ApiKey>, CredentialError> {
    let mut found: Option<&str> = None;
    for pair in query.split('&') {
        let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
        if !is_token_name(raw_name) {
            continue;
        }
        if found.replace(pair).is_some() {
            return Err(CredentialError::SeveralTokenParameters);
        }
    }
    let Some(pair) = found else {
        return Ok(None);
    };
    let raw_value = pair.split_once('=').map_or("", |(_, value)| value);
    let invalid = |error| CredentialError::InvalidKey {
        at: CredentialSource::Query,
        error,
    };
    if raw_value.len() > MAX_ENCODED_KEY_LEN {
        return Err(invalid(KeySyntaxError::TooLong));
    }
    // The pair holds no `&`, so parsing it alone decodes exactly as parsing the whole query
    // would; its length is bounded just above.
    let value = form_urlencoded::parse(pair.as_bytes())
        .next()
        .map(|(_, value)| value)
        .unwrap_or_default();
    if value.is_empty() {
        return Err(CredentialError::EmptyToken {
            at: CredentialSource::Query,
        });
    }
    // Invalid UTF-8 was decoded lossily to U+FFFD, which the key syntax refuses.
    ApiKey::parse(&value).map(Some).map_err(invalid)
}

/// The key of the single `misar.bearer.` entry, `None` if there is none. Whether `misar.v1`
/// is beside it is the handshake's question ([`offered_protocols`]); a malformed header is
/// refused there too (here it only means "no key").
fn from_subprotocols(headers: &http::HeaderMap) -> Result<Option<ApiKey>, CredentialError> {
    let mut found: Option<&str> = None;
    for entry in protocol_entries(headers).flatten() {
        if let Some(key) = entry.strip_prefix(BEARER_PROTOCOL_PREFIX) {
            if found.replace(key).is_some() {
                return Err(CredentialError::SeveralBearerProtocols);
            }
        }
    }
    let Some(key) = found else {
        return Ok(None);
    };
    if key.is_empty() {
        return Err(CredentialError::EmptyToken {
            at: CredentialSource::Subprotocol,
        });
    }
    ApiKey::parse(key)
        .map(Some)
        .map_err(|error| CredentialError::InvalidKey {
            at: CredentialSource::Subprotocol,
            error,
        })
}

/// Whether a raw (still encoded) parameter name decodes to `token`, without allocating.
fn is_token_name(raw: &str) -> bool {
    // `+` would decode to a space, which is never part of `token`, so plain percent-decoding
    // gives the same answer as form decoding here.
    raw.len() <= MAX_ENCODED_NAME_LEN
        && percent_encoding::percent_decode_str(raw).eq("token".bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "msk_live_0123456789abcd";

    fn parts(uri: &str, auth: &[&[u8]]) -> http::request::Parts {
        let mut builder = http::Request::get(uri);
        for value in auth {
            builder = builder.header(AUTHORIZATION, http::HeaderValue::from_bytes(value).unwrap());
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn extract_with(
        uri: &str,
        auth: &[&str],
        protocols: &[&str],
    ) -> Result<Credentials, CredentialError> {
        let auth: Vec<&[u8]> = auth.iter().map(|v| v.as_bytes()).collect();
        let mut parts = parts(uri, &auth);
        for value in protocols {
            parts.headers.append(
                SEC_WEBSOCKET_PROTOCOL,
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        extract_credentials(&parts)
    }

    fn extract(uri: &str, auth: &[&str]) -> Result<Credentials, CredentialError> {
        let auth: Vec<&[u8]> = auth.iter().map(|v| v.as_bytes()).collect();
        extract_credentials(&parts(uri, &auth))
    }

    fn ok(key: &str, source: CredentialSource) -> Result<Credentials, CredentialError> {
        Ok(Credentials {
            key: ApiKey::parse(key).unwrap(),
            source,
        })
    }

    fn invalid(
        at: CredentialSource,
        error: KeySyntaxError,
    ) -> Result<Credentials, CredentialError> {
        Err(CredentialError::InvalidKey { at, error })
    }

    use CredentialSource::{Header, Query, Subprotocol};

    #[test]
    fn bearer_subprotocol() {
        let entry = format!("misar.bearer.{KEY}");
        for value in [
            format!("misar.v1, {entry}"),
            format!("{entry},misar.v1"),
            format!(" chat ,, misar.v1 ,\t{entry} "),
        ] {
            assert_eq!(
                extract_with("/x", &[], &[&value]),
                ok(KEY, Subprotocol),
                "{value}"
            );
        }
        // Entries spread over several headers are one list.
        assert_eq!(
            extract_with("/x", &[], &["misar.v1", &entry]),
            ok(KEY, Subprotocol)
        );
        // Case-sensitive: not a bearer entry, so no credentials at all.
        assert_eq!(
            extract_with("/x", &[], &[&format!("misar.v1, MISAR.BEARER.{KEY}")]),
            Err(CredentialError::Missing)
        );
        // `misar.v1` alone carries no key.
        assert_eq!(
            extract_with("/x", &[], &["misar.v1"]),
            Err(CredentialError::Missing)
        );
    }

    #[test]
    fn subprotocol_ambiguities() {
        let entry = format!("misar.bearer.{KEY}");
        assert_eq!(
            extract_with(
                "/x",
                &[],
                &[&format!("misar.v1, {entry}, misar.bearer.msk_b")]
            ),
            Err(CredentialError::SeveralBearerProtocols)
        );
        // Even when they agree.
        assert_eq!(
            extract_with("/x", &[], &["misar.v1", &entry, &entry]),
            Err(CredentialError::SeveralBearerProtocols)
        );
        assert_eq!(
            extract_with("/x", &[], &["misar.v1, misar.bearer."]),
            Err(CredentialError::EmptyToken { at: Subprotocol })
        );
        assert_eq!(
            extract_with("/x", &[], &["misar.v1, misar.bearer.msk_a.b"]),
            invalid(Subprotocol, KeySyntaxError::InvalidCharacter)
        );
        assert_eq!(
            extract_with("/x", &[], &["misar.v1, misar.bearer.sk_a"]),
            invalid(Subprotocol, KeySyntaxError::MissingPrefix)
        );
        // Places that disagree.
        assert_eq!(
            extract_with(
                "/x",
                &["Bearer msk_other"],
                &[&format!("misar.v1, {entry}")]
            ),
            Err(CredentialError::Conflicting)
        );
        assert_eq!(
            extract_with("/x?token=msk_other", &[], &[&format!("misar.v1, {entry}")]),
            Err(CredentialError::ConflictingBrowserPlaces)
        );
        assert_eq!(
            CredentialError::ConflictingBrowserPlaces.place(),
            Some(Subprotocol)
        );
        assert_eq!(
            CredentialError::SeveralBearerProtocols.place(),
            Some(Subprotocol)
        );
        // Places that agree: the first of header, subprotocol, query.
        assert_eq!(
            extract_with(
                &format!("/x?token={KEY}"),
                &[],
                &[&format!("misar.v1, {entry}")]
            ),
            ok(KEY, Subprotocol)
        );
        assert_eq!(
            extract_with(
                &format!("/x?token={KEY}"),
                &[&format!("Bearer {KEY}")],
                &[&format!("misar.v1, {entry}")]
            ),
            ok(KEY, Header)
        );
        // A valid subprotocol does not excuse an invalid other place.
        assert_eq!(
            extract_with("/x?token=nope", &[], &[&format!("misar.v1, {entry}")]),
            invalid(Query, KeySyntaxError::MissingPrefix)
        );
    }

    #[test]
    fn offered_protocols_counts() {
        let offered = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for value in values {
                headers.append(
                    SEC_WEBSOCKET_PROTOCOL,
                    http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
                );
            }
            offered_protocols(&headers)
        };
        assert_eq!(offered(&[]), Ok(OfferedProtocols::default()));
        let v1 = offered(&["chat, misar.v1"]).unwrap();
        assert!(v1.misar_v1 && v1.bearer_entries == 0);
        let both = offered(&["misar.bearer.msk_a", "misar.v1,misar.bearer.x"]).unwrap();
        assert!(both.misar_v1 && both.bearer_entries == 2);
        let alone = offered(&["misar.bearer.msk_a"]).unwrap();
        assert!(!alone.misar_v1 && alone.bearer_entries == 1);
        // `misar.v1x` and `Misar.v1` are other protocols.
        assert!(!offered(&["misar.v1x, Misar.v1"]).unwrap().misar_v1);
        let mut headers = http::HeaderMap::new();
        headers.append(
            SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_bytes(b"misar.v1, \xE9").unwrap(),
        );
        assert_eq!(offered_protocols(&headers), Err(MalformedProtocols));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(
            extract("/x", &["Bearer msk_live_0123456789abcd"]),
            ok(KEY, Header)
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            assert_eq!(
                extract("/x", &[&format!("{scheme} {KEY}")]),
                ok(KEY, Header),
                "{scheme}"
            );
        }
    }

    #[test]
    fn whitespace_around_and_between_is_tolerated() {
        for value in [
            format!("Bearer  {KEY}"),
            format!("Bearer\t{KEY}"),
            format!(" \tBearer \t {KEY} \t"),
        ] {
            assert_eq!(extract("/x", &[&value]), ok(KEY, Header), "{value:?}");
        }
    }

    #[test]
    fn query_token() {
        assert_eq!(extract(&format!("/x?token={KEY}"), &[]), ok(KEY, Query));
        assert_eq!(
            extract(&format!("/x?a=1&b&token={KEY}&c=%FF"), &[]),
            ok(KEY, Query)
        );
    }

    #[test]
    fn query_token_is_percent_decoded() {
        // `%5F` is `_`, `%6D` is `m`.
        assert_eq!(
            extract("/x?token=%6Dsk%5Flive_0123456789abcd", &[]),
            ok(KEY, Query)
        );
        // The name is decoded too.
        assert_eq!(extract(&format!("/x?t%6Fken={KEY}"), &[]), ok(KEY, Query));
        // Every byte escaped still fits the bound.
        let all: String = KEY.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(extract(&format!("/x?token={all}"), &[]), ok(KEY, Query));
    }

    #[test]
    fn plus_in_token_is_a_space_and_refused() {
        assert_eq!(
            extract("/x?token=msk_a+b", &[]),
            invalid(Query, KeySyntaxError::InvalidCharacter)
        );
        // An encoded plus is a plus, also refused.
        assert_eq!(
            extract("/x?token=msk_a%2Bb", &[]),
            invalid(Query, KeySyntaxError::InvalidCharacter)
        );
    }

    #[test]
    fn invalid_utf8_in_token_is_refused() {
        assert_eq!(
            extract("/x?token=msk_%FF", &[]),
            invalid(Query, KeySyntaxError::InvalidCharacter)
        );
    }

    #[test]
    fn parameter_name_is_exact() {
        assert_eq!(
            extract(&format!("/x?Token={KEY}"), &[]),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            extract(&format!("/x?tokens={KEY}"), &[]),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            extract(&format!("/x?tok+en={KEY}"), &[]),
            Err(CredentialError::Missing)
        );
    }

    #[test]
    fn missing() {
        assert_eq!(extract("/x", &[]), Err(CredentialError::Missing));
        assert_eq!(extract("/x?", &[]), Err(CredentialError::Missing));
        assert_eq!(extract("/x?a=b", &[]), Err(CredentialError::Missing));
    }

    #[test]
    fn both_places_equal_is_header() {
        assert_eq!(
            extract(&format!("/x?token={KEY}"), &[&format!("Bearer {KEY}")]),
            ok(KEY, Header)
        );
    }

    #[test]
    fn both_places_different_is_refused() {
        assert_eq!(
            extract(&format!("/x?token={KEY}"), &["Bearer msk_other"]),
            Err(CredentialError::Conflicting)
        );
    }

    #[test]
    fn one_valid_place_does_not_excuse_an_invalid_other() {
        assert_eq!(
            extract("/x?token=nope", &[&format!("Bearer {KEY}")]),
            invalid(Query, KeySyntaxError::MissingPrefix)
        );
        assert_eq!(
            extract(&format!("/x?token={KEY}"), &["Basic dXNlcjpwYXNz"]),
            Err(CredentialError::NotBearer)
        );
        assert_eq!(
            extract(
                &format!("/x?token={KEY}&token=x"),
                &[&format!("Bearer {KEY}")]
            ),
            Err(CredentialError::SeveralTokenParameters)
        );
    }

    #[test]
    fn several_authorization_headers() {
        let value = format!("Bearer {KEY}");
        assert_eq!(
            extract("/x", &[&value, &value]),
            Err(CredentialError::SeveralAuthorizationHeaders)
        );
    }

    #[test]
    fn several_token_parameters() {
        // Even when they agree.
        assert_eq!(
            extract(&format!("/x?token={KEY}&token={KEY}"), &[]),
            Err(CredentialError::SeveralTokenParameters)
        );
        assert_eq!(
            extract("/x?token&token", &[]),
            Err(CredentialError::SeveralTokenParameters)
        );
        assert_eq!(
            extract(&format!("/x?token={KEY}&t%6Fken=x"), &[]),
            Err(CredentialError::SeveralTokenParameters)
        );
    }

    #[test]
    fn non_bearer_schemes() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "Token msk_abc",
            "Bearer_msk_abc",
            &format!("Bearer{KEY}"),
            "msk_abc",
            "Bearerx msk_abc",
        ] {
            assert_eq!(
                extract("/x", &[value]),
                Err(CredentialError::NotBearer),
                "{value:?}"
            );
        }
    }

    #[test]
    fn header_not_visible_ascii() {
        for value in [&b"Bearer msk_\xE9"[..], b"\x80", b"Bearer\xA0msk_a"] {
            assert_eq!(
                extract_credentials(&parts("/x", &[value])),
                Err(CredentialError::HeaderNotVisibleAscii),
                "{value:?}"
            );
        }
    }

    #[test]
    fn empty_tokens() {
        for value in ["Bearer", "bearer  ", "", " \t "] {
            assert_eq!(
                extract("/x", &[value]),
                Err(CredentialError::EmptyToken { at: Header }),
                "{value:?}"
            );
        }
        for query in ["token=", "token", "a=1&token=&b=2"] {
            assert_eq!(
                extract(&format!("/x?{query}"), &[]),
                Err(CredentialError::EmptyToken { at: Query }),
                "{query}"
            );
        }
    }

    #[test]
    fn key_syntax_is_checked_in_both_places() {
        let cases = [
            ("sk_abc", KeySyntaxError::MissingPrefix),
            ("msk_", KeySyntaxError::Empty),
            ("msk_a.b", KeySyntaxError::InvalidCharacter),
        ];
        for (key, error) in cases {
            assert_eq!(
                extract(&format!("/x?token={key}"), &[]),
                invalid(Query, error)
            );
            assert_eq!(
                extract("/x", &[&format!("Bearer {key}")]),
                invalid(Header, error)
            );
        }
        // Something after the key.
        assert_eq!(
            extract("/x", &[&format!("Bearer {KEY} extra")]),
            invalid(Header, KeySyntaxError::InvalidCharacter)
        );
    }

    #[test]
    fn key_length_bounds() {
        let longest = format!("msk_{}", "k".repeat(MAX_KEY_BODY_LEN));
        assert_eq!(
            extract(&format!("/x?token={longest}"), &[]),
            ok(&longest, Query)
        );
        let too_long = format!("{longest}k");
        assert_eq!(
            extract(&format!("/x?token={too_long}"), &[]),
            invalid(Query, KeySyntaxError::TooLong)
        );
        assert_eq!(
            extract("/x", &[&format!("Bearer {too_long}")]),
            invalid(Header, KeySyntaxError::TooLong)
        );
    }

    #[test]
    fn huge_query_is_refused_before_decoding() {
        // `http::Uri` itself stops at 64 KiB; go close to that.
        let huge = "%41".repeat(20_000);
        assert_eq!(
            extract(&format!("/x?token={huge}"), &[]),
            invalid(Query, KeySyntaxError::TooLong)
        );
        // Tens of thousands of other parameters are skipped, and the token is still found.
        let noise = "%41%42=%43&".repeat(5_000);
        assert_eq!(
            extract(&format!("/x?{noise}token={KEY}"), &[]),
            ok(KEY, Query)
        );
    }

    #[test]
    fn places_of_errors() {
        assert_eq!(CredentialError::Missing.place(), None);
        assert_eq!(CredentialError::Conflicting.place(), Some(Header));
        assert_eq!(CredentialError::NotBearer.place(), Some(Header));
        assert_eq!(
            CredentialError::SeveralAuthorizationHeaders.place(),
            Some(Header)
        );
        assert_eq!(CredentialError::HeaderNotVisibleAscii.place(), Some(Header));
        assert_eq!(CredentialError::SeveralTokenParameters.place(), Some(Query));
        assert_eq!(
            CredentialError::EmptyToken { at: Query }.place(),
            Some(Query)
        );
        assert_eq!(
            CredentialError::InvalidKey {
                at: Header,
                error: KeySyntaxError::Empty
            }
            .place(),
            Some(Header)
        );
    }

    #[test]
    fn error_texts_hold_nothing_of_the_request() {
        let secret = "msk_topsecretvalue";
        let cases = [
            extract("/x", &["Basic topsecretvalue"]),
            extract("/x?token=msk_topsecretvalue.", &[]),
            extract("/x", &["Bearer msk_topsecretvalue."]),
            extract(&format!("/x?token={secret}"), &["Bearer msk_other"]),
            extract(&format!("/x?token={secret}&token={secret}"), &[]),
            extract_with("/x", &[], &["misar.v1, misar.bearer.msk_topsecretvalue."]),
            extract_with(
                "/x?token=msk_other",
                &[],
                &["misar.v1, misar.bearer.msk_topsecretvalue"],
            ),
        ];
        for case in cases {
            let err = case.unwrap_err();
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains("topsecret"), "{text}");
            }
        }
    }
}
