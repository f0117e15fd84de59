//! Rejections and how they are delivered (§2.3, §2.8).

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::auth::{CredentialError, CredentialSource};
use crate::close::CloseCode;
use crate::route::NotFound;

use super::RejectionStyle;

/// Why a request is refused.
///
/// The texts (`Display`) name the rule that was broken and never contain anything copied from
/// the request, so they may be logged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No channel at this path (HTTP 404). Decided before authentication.
    #[error("not found: {0}")]
    NotFound(NotFound),
    /// The request is malformed in a way this protocol defines (HTTP 400). Decided before
    /// authentication; the client does not retry it.
    #[error("bad request: {0}")]
    BadRequest(BadRequest),
    /// Not a `GET` (HTTP 405 with `Allow: GET`).
    #[error("method not allowed: a WebSocket handshake is a GET")]
    MethodNotAllowed,
    /// An allowlist is configured and the `Origin` is not on it (HTTP 403).
    #[error("Origin not allowed")]
    OriginRefused,
    /// The request carries no usable credentials; the key-check hook was not asked
    /// (HTTP 403 or close 4401).
    #[error("unauthenticated: {0}")]
    Unauthenticated(CredentialError),
    /// The key-check hook does not know the key (HTTP 403 or close 4401).
    #[error("unknown API key")]
    UnknownKey,
    /// The ownership hook said no: the campaign belongs to another account, or does not exist
    /// (the two are indistinguishable on purpose) (HTTP 403 or close 4403).
    #[error("the campaign does not belong to this account")]
    NotOwned,
    /// A hook failed (e.g. its database is down): fail closed (HTTP 503).
    #[error("an authorization hook failed")]
    HookFailed,
    /// The account already has as many connections as allowed (HTTP 429).
    #[error("too many connections for this account")]
    TooManyForAccount,
    /// As many handshakes as allowed wait on the hooks already (§2.14): refused without
    /// calling a hook (HTTP 503 with `Retry-After`).
    #[error("too many pending handshakes; retry after {retry_after_secs} s")]
    TooManyPendingHandshakes {
        /// Seconds the client should wait, sent as `Retry-After`.
        retry_after_secs: u32,
    },
    /// The server has as many connections as allowed (HTTP 503 with `Retry-After`).
    #[error("too many connections; retry after {retry_after_secs} s")]
    TooManyConnections {
        /// Seconds the client should wait, sent as `Retry-After`.
        retry_after_secs: u32,
    },
}

impl Rejection {
    /// The HTTP status of the rejection's HTTP form.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::NotFound(_) => StatusCode::NOT_FOUND,
            Rejection::BadRequest(_) => StatusCode::BAD_REQUEST,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::OriginRefused
            | Rejection::Unauthenticated(_)
            | Rejection::UnknownKey
            | Rejection::NotOwned => StatusCode::FORBIDDEN,
            Rejection::HookFailed
            | Rejection::TooManyConnections { .. }
            | Rejection::TooManyPendingHandshakes { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::TooManyForAccount => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The close code of an authentication (4401) or authorization (4403) failure; `None` for
    /// every other rejection, which is always delivered as HTTP.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Rejection::Unauthenticated(_) | Rejection::UnknownKey => Some(CloseCode::Unauthorized),
            Rejection::NotOwned => Some(CloseCode::Forbidden),
            _ => None,
        }
    }

    /// The `error` string of the JSON body.
    fn error_name(&self) -> &'static str {
        match self {
            Rejection::NotFound(_) => "not_found",
            Rejection::BadRequest(_) => "bad_request",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::OriginRefused => "origin_forbidden",
            Rejection::Unauthenticated(_) | Rejection::UnknownKey => "unauthorized",
            Rejection::NotOwned => "forbidden",
            Rejection::HookFailed => "unavailable",
            Rejection::TooManyForAccount => "too_many_connections",
            Rejection::TooManyConnections { .. } | Rejection::TooManyPendingHandshakes { .. } => {
                "overloaded"
            }
        }
    }
}

/// What makes a request a bad one (HTTP 400, `{"error":"bad_request","message":...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadRequest {
    /// A `misar.bearer.` subprotocol without `misar.v1` beside it (§2.12): a 101 could echo
    /// nothing the browser would accept.
    #[error("a `misar.bearer.` subprotocol must be offered together with `misar.v1`")]
    BearerWithoutProtocol,
    /// A `Sec-WebSocket-Protocol` header that is not visible ASCII.
    #[error("the Sec-WebSocket-Protocol header is not visible ASCII")]
    MalformedProtocols,
    /// A bad or ambiguous resume value (§2.11): several `resume` parameters or
    /// `Misar-Resume` headers, both present and different, or neither `new` nor a valid
    /// position. The client does not retry it.
    #[error("bad resume value: {0}")]
    Resume(#[from] crate::resume::ResumeError),
}

/// How a rejection reaches the client, fixed when it is built from the style and the place
/// the credentials came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    Http,
    CloseAfterUpgrade,
}

impl Delivery {
    /// Resolves the style for a request whose credentials came from `place` (`None`: there
    /// were none). `Auto` closes after the upgrade only for browsers (`?token=` and
    /// subprotocol clients); a request without any credentials gets the default, HTTP, since
    /// nothing says it is a browser.
    fn resolve(style: RejectionStyle, place: Option<CredentialSource>) -> Self {
        match (style, place) {
            (RejectionStyle::Http, _) => Delivery::Http,
            (RejectionStyle::CloseAfterUpgrade, _) => Delivery::CloseAfterUpgrade,
            (RejectionStyle::Auto, Some(place)) if place.is_browser_place() => {
                Delivery::CloseAfterUpgrade
            }
            (RejectionStyle::Auto, _) => Delivery::Http,
        }
    }
}

/// The request is refused.
///
/// [`Rejected::action`] says what to do, in the configured [`RejectionStyle`];
/// [`Rejected::into_response`] always gives the HTTP form. Every HTTP form carries
/// `Cache-Control: no-store`, `Content-Type: application/json` and a JSON body with an
/// `error` string; authentication and authorization failures add the `closeCode` a
/// `CloseAfterUpgrade` client would have seen and a `message`. No response ever contains the
/// key.
///
/// ```
/// use misar_proto::handshake::Rejected;
/// let busy = Rejected::too_many_connections(5).into_response();
/// assert_eq!(busy.status(), 503);
/// assert_eq!(busy.headers()["retry-after"], "5");
/// assert_eq!(&busy.body()[..], br#"{"error":"overloaded"}"#);
/// ```
#[must_use = "a rejection must be sent: see Rejected::action"]
#[derive(Debug)]
pub struct Rejected {
    reason: Rejection,
    delivery: Delivery,
    /// The subprotocol a close-after-upgrade 101 echoes (`misar.v1` when offered).
    echo: Option<&'static str>,
}

impl Rejected {
    /// A rejection always delivered as HTTP (routing, method, origin, hooks, limits).
    pub(super) fn http(reason: Rejection) -> Self {
        Self {
            reason,
            delivery: Delivery::Http,
            echo: None,
        }
    }

    /// An authentication or authorization failure, delivered per `style`.
    pub(super) fn auth(
        reason: Rejection,
        style: RejectionStyle,
        place: Option<CredentialSource>,
        echo: Option<&'static str>,
    ) -> Self {
        Self {
            reason,
            delivery: Delivery::resolve(style, place),
            echo,
        }
    }

    /// HTTP 503 with `Retry-After: retry_after_secs`: `max_pending_handshakes` requests wait
    /// on the hooks already (§2.14). For adapters bounding the handshakes in flight; no hook
    /// is called for this request.
    pub fn too_many_pending_handshakes(retry_after_secs: u32) -> Self {
        Self::http(Rejection::TooManyPendingHandshakes { retry_after_secs })
    }

    /// HTTP 429: the account is at its connection limit (§2.8). For adapters enforcing the
    /// limit after [`Accepted`](super::Accepted).
    pub fn too_many_for_account() -> Self {
        Self::http(Rejection::TooManyForAccount)
    }

    /// HTTP 503 with `Retry-After: retry_after_secs`: the server is at its connection limit
    /// (§2.8). For adapters enforcing the limit after [`Accepted`](super::Accepted).
    pub fn too_many_connections(retry_after_secs: u32) -> Self {
        Self::http(Rejection::TooManyConnections { retry_after_secs })
    }

    /// Why.
    pub fn reason(&self) -> &Rejection {
        &self.reason
    }

    /// The HTTP status of the HTTP form (also for a rejection that
    /// [`action`](Rejected::action) delivers as a close after the upgrade).
    pub fn status(&self) -> StatusCode {
        self.reason.status()
    }

    /// What to do: send a response, or (style `CloseAfterUpgrade`, or `Auto` with `?token=`
    /// credentials, and only for 4401/4403 failures) upgrade and close at once.
    pub fn action(self) -> RejectAction {
        match (self.delivery, self.reason.close_code()) {
            (Delivery::CloseAfterUpgrade, Some(code)) => {
                RejectAction::UpgradeThenClose(CloseAfterUpgrade {
                    code,
                    subprotocol: self.echo,
                })
            }
            _ => RejectAction::Respond(self.into_response()),
        }
    }

    /// The HTTP form, whatever the style.
    pub fn into_response(self) -> Response<Bytes> {
        let reason = &self.reason;
        let mut body = serde_json::Map::new();
        body.insert("error".into(), reason.error_name().into());
        if let Some(code) = reason.close_code() {
            body.insert("closeCode".into(), code.as_u16().into());
        }
        let message = match reason {
            Rejection::Unauthenticated(e) => Some(e.to_string()),
            Rejection::UnknownKey | Rejection::NotOwned | Rejection::OriginRefused => {
                Some(reason.to_string())
            }
            Rejection::BadRequest(e) => Some(e.to_string()),
            _ => None,
        };
        if let Some(message) = message {
            body.insert("message".into(), message.into());
        }
        // `Value`'s `Display` is infallible, unlike `to_vec`, and escapes every string.
        let body = serde_json::Value::Object(body).to_string();

        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = reason.status();
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match reason {
            Rejection::MethodNotAllowed => {
                headers.insert(ALLOW, HeaderValue::from_static("GET"));
            }
            Rejection::TooManyConnections { retry_after_secs }
            | Rejection::TooManyPendingHandshakes { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

/// What a rejection asks the adapter to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum RejectAction {
    /// Send this response; do not upgrade.
    Respond(Response<Bytes>),
    /// Upgrade, then run a session that only closes with this code
    /// ([`CloseAfterUpgrade`] builds it).
    UpgradeThenClose(CloseAfterUpgrade),
}

/// A rejection to deliver after the upgrade: the close code, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseAfterUpgrade {
    code: CloseCode,
    subprotocol: Option<&'static str>,
}

impl CloseAfterUpgrade {
    /// 4401 or 4403.
    pub fn code(&self) -> CloseCode {
        self.code
    }

    /// The subprotocol the 101 must echo: `Some("misar.v1")` when the client offered it, so
    /// a browser accepts the upgrade and sees the close code (§2.12).
    pub fn subprotocol(&self) -> Option<&'static str> {
        self.subprotocol
    }
}
