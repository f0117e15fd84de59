//! The client's handshake request, and what it learns from the handshake response.

use std::fmt::Write as _;

use std::time::Duration;

use http::header::{
    AUTHORIZATION, HOST, HeaderName, HeaderValue, RETRY_AFTER, SEC_WEBSOCKET_PROTOCOL,
};
use http::uri::{Authority, PathAndQuery, Scheme};

use crate::auth::{ApiKey, BEARER_PROTOCOL_PREFIX, SUBPROTOCOL};
use crate::resume::{RESUME_HEADER, RESUME_PARAMETER, ResumeRequest};
use crate::route::Channel;

use super::ClientOutcome;

/// How the client presents its key (§2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>` (servers, Node.js; keeps the key out of URLs and logs).
    #[default]
    Header,
    /// `?token=<key>` (what browsers can do: they cannot set headers on a WebSocket).
    Query,
    /// `Sec-WebSocket-Protocol: misar.v1, misar.bearer.<key>` (§2.12), marked sensitive: what
    /// browsers do to keep the key out of URLs. The server must echo exactly `misar.v1`.
    Subprotocol,
}

/// Why no handshake request could be built. Never contains the key or the URL's query.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The URL does not parse as an absolute URI.
    #[error("the server URL is not a valid absolute URI")]
    InvalidUrl,
    /// The scheme is not `ws` or `wss`.
    #[error("the server URL's scheme must be ws or wss")]
    UnsupportedScheme,
    /// The URL has no host.
    #[error("the server URL has no host")]
    MissingHost,
    /// The URL carries `user:password@`; credentials go in the key, nowhere else.
    #[error("the server URL must not carry user information")]
    UserInfo,
    /// The URL has a `#fragment`, which WebSocket URLs may not have (RFC 6455 §3).
    #[error("the server URL must not have a fragment")]
    Fragment,
    /// The URL already has a `token` query parameter: the key is the config's, and a second
    /// one would make the server refuse the request as ambiguous.
    #[error("the server URL already has a `token` query parameter")]
    TokenInUrl,
    /// The URL already has a `resume` query parameter: the session sends its own resume
    /// value (`Misar-Resume`), and a second, different one would make the server refuse the
    /// request with 400 (§2.11).
    #[error("the server URL already has a `resume` query parameter")]
    ResumeInUrl,
    /// The session finished or stopped; it makes no more connections.
    #[error("the client session has ended")]
    Ended,
    /// The request could not be assembled.
    #[error("the handshake request could not be built")]
    Build,
}

/// Builds the handshake request: `GET` of the channel's URL with `Host` and, per `style`, the
/// key in `Authorization` or `Sec-WebSocket-Protocol` (marked sensitive), or in `token=`.
pub(super) fn build(
    url: &str,
    key: &ApiKey,
    style: AuthStyle,
    channel: &Channel,
    resume: Option<&ResumeRequest>,
) -> Result<http::Request<()>, RequestError> {
    if url.contains('#') {
        return Err(RequestError::Fragment);
    }
    let base: http::Uri = url.parse().map_err(|_| RequestError::InvalidUrl)?;
    let scheme = match base.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("ws") => "ws",
        Some(s) if s.eq_ignore_ascii_case("wss") => "wss",
        Some(_) => return Err(RequestError::UnsupportedScheme),
        None => return Err(RequestError::InvalidUrl),
    };
    let authority = base.authority().ok_or(RequestError::MissingHost)?;
    if authority.as_str().contains('@') {
        return Err(RequestError::UserInfo);
    }
    if authority.host().is_empty() {
        return Err(RequestError::MissingHost);
    }
    let query = base.query().unwrap_or("");
    if form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "token") {
        return Err(RequestError::TokenInUrl);
    }
    if resume.is_some()
        && form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == RESUME_PARAMETER)
    {
        return Err(RequestError::ResumeInUrl);
    }

    let mut path_and_query = channel.path(base.path());
    let mut params = Vec::new();
    if !query.is_empty() {
        params.push(query.to_owned());
    }
    if style == AuthStyle::Query {
        // Keys are `[A-Za-z0-9_-]` and need no escaping, but encode anyway: the URL is the
        // one place where a mistake would not be caught by the key's own syntax check.
        let mut token = String::from("token=");
        token.extend(form_urlencoded::byte_serialize(key.expose().as_bytes()));
        params.push(token);
    }
    if !params.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&params.join("&"));
    }

    let uri = http::Uri::builder()
        .scheme(Scheme::try_from(scheme).map_err(|_| RequestError::Build)?)
        .authority(Authority::try_from(authority.as_str()).map_err(|_| RequestError::Build)?)
        .path_and_query(
            PathAndQuery::try_from(path_and_query.as_str()).map_err(|_| RequestError::Build)?,
        )
        .build()
        .map_err(|_| RequestError::Build)?;

    let mut request = http::Request::get(uri)
        .body(())
        .map_err(|_| RequestError::Build)?;
    let headers = request.headers_mut();
    headers.insert(
        HOST,
        HeaderValue::from_str(authority.as_str()).map_err(|_| RequestError::Build)?,
    );
    if style == AuthStyle::Header {
        let mut bearer = String::with_capacity(7 + key.expose().len());
        let _ = write!(bearer, "Bearer {}", key.expose());
        let mut value = HeaderValue::from_str(&bearer).map_err(|_| RequestError::Build)?;
        // Keeps the key out of HPACK tables and tells well-behaved loggers to skip it.
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    if style == AuthStyle::Subprotocol {
        let mut offer = String::with_capacity(
            SUBPROTOCOL.len() + 2 + BEARER_PROTOCOL_PREFIX.len() + key.expose().len(),
        );
        let _ = write!(
            offer,
            "{SUBPROTOCOL}, {BEARER_PROTOCOL_PREFIX}{}",
            key.expose()
        );
        let mut value = HeaderValue::from_str(&offer).map_err(|_| RequestError::Build)?;
        value.set_sensitive(true);
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
    if let Some(resume) = resume {
        // `new` or `<epoch>:<offset>`: ASCII by construction.
        let value = HeaderValue::from_str(&resume.to_string()).map_err(|_| RequestError::Build)?;
        headers.insert(HeaderName::from_static(RESUME_HEADER), value);
    }
    Ok(request)
}

/// `Retry-After` in delta-seconds (RFC 9110 §10.2.3), when there is exactly one such header.
/// An HTTP-date is ignored: the core reads no clock, and the servers of this protocol send
/// seconds.
pub(super) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let mut values = headers.get_all(RETRY_AFTER).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?.trim_matches([' ', '\t']);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Digits only: the one failure left is overflow, a wait longer than any cap.
    Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)))
}

/// The JSON body of a pre-upgrade rejection (§2.3):
/// `{"error":"unauthorized","closeCode":4401,"message":"..."}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RejectionBody {
    /// `error`: `"unauthorized"`, `"forbidden"`, or another short name.
    pub error: String,
    /// `closeCode`: the close code a `CloseAfterUpgrade` client would have seen.
    #[serde(default)]
    pub close_code: Option<u16>,
    /// `message`: a human-readable explanation.
    #[serde(default)]
    pub message: Option<String>,
}

/// Bodies longer than this are not parsed: a rejection body is a few dozen bytes.
pub(super) const MAX_REJECTION_BODY: usize = 4096;

impl RejectionBody {
    pub(super) fn parse(body: &[u8]) -> Option<Self> {
        if body.is_empty() || body.len() > MAX_REJECTION_BODY {
            return None;
        }
        serde_json::from_slice(body).ok()
    }
}

/// The handshake got an HTTP response other than `101 Switching Protocols`.
///
/// Carries what the client should do next: [`ClientOutcome::Stop`] for a 403 (or another
/// final 4xx), [`ClientOutcome::Reconnect`] with a backoff delay otherwise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the server refused the WebSocket handshake with HTTP {status}")]
pub struct HandshakeFailure {
    pub(super) status: u16,
    pub(super) rejection: Option<RejectionBody>,
    pub(super) outcome: ClientOutcome,
    pub(super) retry_after: Option<Duration>,
}

impl HandshakeFailure {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The parsed JSON body, when the response had one of the §2.3 shape.
    pub fn rejection(&self) -> Option<&RejectionBody> {
        self.rejection.as_ref()
    }

    /// What to do next.
    pub fn outcome(&self) -> ClientOutcome {
        self.outcome
    }

    /// The server's `Retry-After` (seconds) of a 429 or 503, when it sent one: the
    /// reconnect delay of [`outcome`](Self::outcome) is then this wait, capped by the
    /// backoff's cap (§2.14).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether retrying cannot help (the outcome is [`ClientOutcome::Stop`]).
    pub fn is_fatal(&self) -> bool {
        matches!(self.outcome, ClientOutcome::Stop(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::CampaignId;

    fn key() -> ApiKey {
        ApiKey::parse("msk_test_key_1234").unwrap()
    }

    fn campaign() -> Channel {
        Channel::Campaign(CampaignId::new("c-42").unwrap())
    }

    #[test]
    fn header_style() {
        let req = build(
            "wss://api.misar.io/mail/ws",
            &key(),
            AuthStyle::Header,
            &Channel::Inbox,
            None,
        )
        .unwrap();
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(req.uri(), "wss://api.misar.io/mail/ws/inbox");
        assert_eq!(req.headers()[HOST], "api.misar.io");
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer msk_test_key_1234");
        assert!(req.headers()[AUTHORIZATION].is_sensitive());
        assert!(!req.uri().to_string().contains("msk_"));
    }

    #[test]
    fn subprotocol_style() {
        let req = build(
            "wss://api.misar.io/mail/ws",
            &key(),
            AuthStyle::Subprotocol,
            &Channel::Inbox,
            None,
        )
        .unwrap();
        assert_eq!(req.uri(), "wss://api.misar.io/mail/ws/inbox");
        let offer = &req.headers()[SEC_WEBSOCKET_PROTOCOL];
        assert_eq!(offer, "misar.v1, misar.bearer.msk_test_key_1234");
        assert!(offer.is_sensitive());
        assert!(format!("{:?}", req.headers()).contains("Sensitive"));
        assert!(!format!("{:?}", req.headers()).contains("msk_"));
        assert!(req.headers().get(AUTHORIZATION).is_none());
        assert!(!req.uri().to_string().contains("msk_"));
    }

    #[test]
    fn retry_after_is_delta_seconds_only() {
        let parse = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for value in values {
                headers.append(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            }
            retry_after(&headers)
        };
        assert_eq!(parse(&["5"]), Some(Duration::from_secs(5)));
        assert_eq!(parse(&[" 0 "]), Some(Duration::ZERO));
        assert_eq!(
            parse(&["99999999999999999999999"]),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&["-1"]), None);
        assert_eq!(parse(&["1.5"]), None);
        assert_eq!(parse(&["Wed, 21 Oct 2015 07:28:00 GMT"]), None);
        assert_eq!(parse(&["1", "2"]), None);
    }

    #[test]
    fn query_style_appends_to_existing_query() {
        let req = build(
            "ws://localhost:8080/mail/ws/?region=eu",
            &key(),
            AuthStyle::Query,
            &campaign(),
            None,
        )
        .unwrap();
        assert_eq!(
            req.uri(),
            "ws://localhost:8080/mail/ws/campaigns/c-42?region=eu&token=msk_test_key_1234"
        );
        assert_eq!(req.headers()[HOST], "localhost:8080");
        assert!(req.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn root_and_custom_paths() {
        let req = build("wss://h", &key(), AuthStyle::Query, &Channel::Inbox, None).unwrap();
        assert_eq!(req.uri(), "wss://h/inbox?token=msk_test_key_1234");
        let req = build(
            "WSS://h/api/v2",
            &key(),
            AuthStyle::Header,
            &campaign(),
            None,
        )
        .unwrap();
        assert_eq!(req.uri(), "wss://h/api/v2/campaigns/c-42");
        assert_eq!(req.uri().scheme_str(), Some("wss"));
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        let cases = [
            ("https://h/mail/ws", RequestError::UnsupportedScheme),
            ("h/mail/ws", RequestError::InvalidUrl),
            ("/mail/ws", RequestError::InvalidUrl),
            ("wss://", RequestError::InvalidUrl),
            ("wss://:443/x", RequestError::MissingHost),
            ("wss://u:msk_secret@h/x", RequestError::UserInfo),
            ("wss://h/x#frag", RequestError::Fragment),
            ("wss://h/x?token=msk_other", RequestError::TokenInUrl),
            ("wss://h/x?a=1&tok%65n=msk_other", RequestError::TokenInUrl),
            ("wss://h/a b", RequestError::InvalidUrl),
        ];
        for (url, expected) in cases {
            for style in [AuthStyle::Header, AuthStyle::Query, AuthStyle::Subprotocol] {
                let err = build(url, &key(), style, &Channel::Inbox, None).unwrap_err();
                assert_eq!(err, expected, "{url}");
                assert!(!err.to_string().contains("msk_"));
            }
        }
    }

    #[test]
    fn the_resume_value_goes_in_the_misar_resume_header() {
        let position = crate::resume::Position::parse("e1:42").unwrap();
        let from = ResumeRequest::From(position);
        for (resume, expected) in [(ResumeRequest::New, "new"), (from, "e1:42")] {
            let req = build(
                "wss://h/ws",
                &key(),
                AuthStyle::Query,
                &Channel::Inbox,
                Some(&resume),
            )
            .unwrap();
            assert_eq!(req.headers()[RESUME_HEADER], expected);
            assert!(!req.uri().to_string().contains("resume"));
        }
        let req = build(
            "wss://h/ws",
            &key(),
            AuthStyle::Header,
            &Channel::Inbox,
            None,
        )
        .unwrap();
        assert!(req.headers().get(RESUME_HEADER).is_none());
        // The URL's own `resume` would disagree with the header: refused, unless the session
        // does not opt in (then the URL's value is the application's choice).
        let url = "wss://h/ws?resume=new";
        let new = ResumeRequest::New;
        let refused = build(url, &key(), AuthStyle::Header, &Channel::Inbox, Some(&new));
        assert_eq!(refused.unwrap_err(), RequestError::ResumeInUrl);
        let req = build(url, &key(), AuthStyle::Header, &Channel::Inbox, None).unwrap();
        assert_eq!(req.uri(), "wss://h/ws/inbox?resume=new");
    }

    #[test]
    fn rejection_body_parses_the_contract_shape_only() {
        let body = br#"{"error":"forbidden","closeCode":4403,"message":"not yours","extra":1}"#;
        let parsed = RejectionBody::parse(body).unwrap();
        assert_eq!(parsed.error, "forbidden");
        assert_eq!(parsed.close_code, Some(4403));
        assert_eq!(parsed.message.as_deref(), Some("not yours"));
        let minimal = RejectionBody::parse(br#"{"error":"overloaded"}"#).unwrap();
        assert_eq!((minimal.close_code, minimal.message), (None, None));
        assert_eq!(RejectionBody::parse(b""), None);
        assert_eq!(RejectionBody::parse(b"<html>"), None);
        assert_eq!(RejectionBody::parse(br#"{"closeCode":4401}"#), None);
        let mut huge = br#"{"error":""#.to_vec();
        huge.extend(std::iter::repeat_n(b'x', MAX_REJECTION_BODY));
        huge.extend(br#""}"#);
        assert_eq!(RejectionBody::parse(&huge), None);
    }
}
