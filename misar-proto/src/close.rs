//! Close codes (§2.6), close reasons, and the client's retry advice.
//!
//! Two directions, two types:
//! - [`CloseCode`] is a code that may be **sent**. 1005, 1006 and 1015 are reserved by RFC 6455
//!   for "no status", "abnormal closure" and "TLS failure" and can never be put on the wire, so
//!   no `CloseCode` value represents them.
//! - [`Disconnect`] is what a client **observed** when its connection ended: a close frame with
//!   a code, a close frame without one (1005), a dropped transport (1006), an HTTP rejection of
//!   the handshake, or a failure to connect at all. [`advise`] maps it to what the client should
//!   do next, the table of §2.6 as a pure function.

use std::fmt;

/// A WebSocket close code that may be sent on the wire.
///
/// Construct the named codes directly, or parse a received code with
/// [`CloseCode::from_wire`], which refuses codes RFC 6455 forbids on the wire.
///
/// ```
/// use misar_proto::close::CloseCode;
/// assert_eq!(CloseCode::GoingAway.as_u16(), 1001);
/// assert_eq!(CloseCode::from_wire(4401), Ok(CloseCode::Unauthorized));
/// assert!(CloseCode::from_wire(1006).is_err()); // abnormal closure: never sent
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: normal closure; sent after a campaign's terminal event (a client finishes only if
    /// that event arrived: see [`advise`]).
    Normal,
    /// 1001: going away; heartbeat timeout, server shutdown or restart.
    GoingAway,
    /// 1002: the peer broke the WebSocket protocol.
    ProtocolError,
    /// 1003: the peer sent a data type that cannot be accepted.
    Unsupported,
    /// 1007: a message's payload was inconsistent with its type (e.g. invalid UTF-8 text).
    InvalidPayload,
    /// 1008: the client broke policy (too many client messages).
    PolicyViolation,
    /// 1009: a client message over the size limit.
    MessageTooBig,
    /// 1010: the client expected an extension the server did not negotiate.
    MandatoryExtension,
    /// 1011: internal server error.
    InternalError,
    /// 1012: the service is restarting.
    ServiceRestart,
    /// 1013: slow consumer or server overloaded; try again later.
    TryAgainLater,
    /// 1014: a gateway received an invalid response upstream.
    BadGateway,
    /// 4401: missing or invalid API key, or key revoked mid-session.
    Unauthorized,
    /// 4403: campaign not owned by the account, or ownership revoked.
    Forbidden,
    /// Any other registered (3000–3999) or private (4000–4999) code.
    Other(ApplicationCode),
}

/// A close code in 3000–4999 that has no name in this crate.
///
/// The field is private: the only way to build one is [`ApplicationCode::new`], which refuses
/// anything outside 3000–4999 (and 4401/4403, which are [`CloseCode::Unauthorized`] and
/// [`CloseCode::Forbidden`]), so a `CloseCode` is always sendable and always canonical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApplicationCode(u16);

impl ApplicationCode {
    /// Accepts 3000–4999 except the named 4401 and 4403.
    pub fn new(code: u16) -> Option<Self> {
        ((3000..=4999).contains(&code) && code != 4401 && code != 4403).then_some(Self(code))
    }

    /// The numeric code.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// A received close code that must not appear on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidCloseCode {
    /// 1005, 1006 or 1015: reserved for local use, never sent.
    #[error("close code {0} is reserved and must never be sent on the wire")]
    Reserved(u16),
    /// Below 1000, an unassigned 1xxx/2xxx code, or 5000 and above.
    #[error("close code {0} is not a valid close code")]
    Unassigned(u16),
}

impl CloseCode {
    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::MandatoryExtension => 1010,
            CloseCode::InternalError => 1011,
            CloseCode::ServiceRestart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::BadGateway => 1014,
            CloseCode::Unauthorized => 4401,
            CloseCode::Forbidden => 4403,
            CloseCode::Other(code) => code.get(),
        }
    }

    /// Parses a code received in a close frame. Refuses the codes that RFC 6455 §7.4 forbids on
    /// the wire, so a peer sending one can be answered with 1002.
    pub fn from_wire(code: u16) -> Result<Self, InvalidCloseCode> {
        Ok(match code {
            1000 => CloseCode::Normal,
            1001 => CloseCode::GoingAway,
            1002 => CloseCode::ProtocolError,
            1003 => CloseCode::Unsupported,
            1007 => CloseCode::InvalidPayload,
            1008 => CloseCode::PolicyViolation,
            1009 => CloseCode::MessageTooBig,
            1010 => CloseCode::MandatoryExtension,
            1011 => CloseCode::InternalError,
            1012 => CloseCode::ServiceRestart,
            1013 => CloseCode::TryAgainLater,
            1014 => CloseCode::BadGateway,
            4401 => CloseCode::Unauthorized,
            4403 => CloseCode::Forbidden,
            1005 | 1006 | 1015 => return Err(InvalidCloseCode::Reserved(code)),
            other => match ApplicationCode::new(other) {
                Some(app) => CloseCode::Other(app),
                None => return Err(InvalidCloseCode::Unassigned(code)),
            },
        })
    }

    /// A short human-readable reason this crate sends with the code.
    pub fn default_reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "campaign finished",
            CloseCode::GoingAway => "going away",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::Unsupported => "unsupported data",
            CloseCode::InvalidPayload => "invalid payload",
            CloseCode::PolicyViolation => "too many client messages",
            CloseCode::MessageTooBig => "client message too large",
            CloseCode::MandatoryExtension => "extension required",
            CloseCode::InternalError => "internal error",
            CloseCode::ServiceRestart => "service restart",
            CloseCode::TryAgainLater => "slow consumer",
            CloseCode::BadGateway => "bad gateway",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
            CloseCode::Other(_) => "",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.as_u16()
    }
}

impl TryFrom<u16> for CloseCode {
    type Error = InvalidCloseCode;
    fn try_from(code: u16) -> Result<Self, Self::Error> {
        CloseCode::from_wire(code)
    }
}

/// The longest close reason RFC 6455 allows: a control frame payload is at most 125 bytes,
/// two of which are the code.
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// A close reason of at most [`MAX_CLOSE_REASON_BYTES`] bytes of UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct CloseReason(String);

/// A close reason over [`MAX_CLOSE_REASON_BYTES`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("close reason is {len} bytes; at most {MAX_CLOSE_REASON_BYTES} are allowed")]
pub struct ReasonTooLong {
    /// Length of the refused reason in bytes.
    pub len: usize,
}

impl CloseReason {
    /// Accepts a reason of at most 123 bytes.
    pub fn new(reason: impl Into<String>) -> Result<Self, ReasonTooLong> {
        let reason = reason.into();
        if reason.len() > MAX_CLOSE_REASON_BYTES {
            return Err(ReasonTooLong { len: reason.len() });
        }
        Ok(Self(reason))
    }

    /// Cuts a reason down to 123 bytes at a character boundary, so any text can be sent.
    pub fn truncated(reason: &str) -> Self {
        let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self(reason[..end].to_owned())
    }

    /// The reason text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A close frame: a sendable code and its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The code.
    pub code: CloseCode,
    /// The reason, at most 123 bytes.
    pub reason: CloseReason,
}

impl CloseFrame {
    /// A frame with the code's [default reason](CloseCode::default_reason).
    pub fn new(code: CloseCode) -> Self {
        Self {
            code,
            reason: CloseReason::truncated(code.default_reason()),
        }
    }
}

/// How a client's connection ended, as it observed it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The server sent a close frame with this code.
    Closed(CloseCode),
    /// A close frame without a code (1005), or with a code RFC 6455 forbids on the wire.
    ClosedWithoutCode,
    /// The transport ended without a close frame (1006), or the client declared the server
    /// dead after its liveness timeout.
    Dropped,
    /// The handshake got an HTTP response other than 101.
    HandshakeRejected {
        /// The HTTP status of the response.
        status: u16,
    },
    /// The connection could not be made (refused, DNS, TLS, timeout).
    ConnectFailed,
}

/// Which channel a client is subscribed to; decides what 1000 means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// `/inbox`.
    Inbox,
    /// `/campaigns/{id}`.
    Campaign,
}

/// How long to wait before reconnecting, as a class the [`Backoff`](crate::backoff::Backoff)
/// turns into a delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pace {
    /// Exponential backoff with full jitter from the configured base.
    Normal,
    /// The server said it is overloaded or failing (1011, 1013, 1014, HTTP 408/429): the
    /// backoff starts from a base four times larger.
    Longer,
}

/// Why a client must stop for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fatal {
    /// 4401: the key is missing, invalid or revoked.
    Unauthorized,
    /// 4403: the campaign is not this account's.
    Forbidden,
    /// HTTP 403 before the upgrade.
    HandshakeForbidden,
    /// Another 4xx status before the upgrade (other than 408 and 429): retrying cannot help.
    HandshakeRefused(u16),
}

/// What a client should do after a [`Disconnect`] — the §2.6 table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Advice {
    /// The subscription is complete: a campaign channel on which a terminal event arrived.
    Finish,
    /// Reconnect after a backoff delay of this pace.
    Reconnect(Pace),
    /// Stop: retrying cannot succeed.
    Stop(Fatal),
}

/// The client's default action after a disconnect on a channel (§2.6), as a pure function.
///
/// `terminal_event` says whether a terminal campaign event (`completed`, `failed`,
/// `cancelled`) arrived on this subscription. It decides what a close 1000 means on a campaign
/// channel: after a terminal event the subscription is finished (however the connection
/// ended: reconnecting would only replay the end); without one, a 1000 is no finish — a
/// proxy or load balancer closes with 1000 too — and the client reconnects with backoff, as
/// on the inbox. On the inbox channel `terminal_event` is ignored (it has no terminal
/// events).
///
/// ```
/// use misar_proto::close::{advise, Advice, ChannelKind, CloseCode, Disconnect, Fatal, Pace};
/// let normal = Disconnect::Closed(CloseCode::Normal);
/// assert_eq!(advise(&normal, ChannelKind::Campaign, true), Advice::Finish);
/// assert_eq!(advise(&normal, ChannelKind::Campaign, false), Advice::Reconnect(Pace::Normal));
/// assert_eq!(advise(&normal, ChannelKind::Inbox, false), Advice::Reconnect(Pace::Normal));
/// assert_eq!(advise(&Disconnect::Dropped, ChannelKind::Campaign, true), Advice::Finish);
/// assert_eq!(advise(&Disconnect::Closed(CloseCode::Unauthorized), ChannelKind::Inbox, false), Advice::Stop(Fatal::Unauthorized));
/// assert_eq!(advise(&Disconnect::HandshakeRejected { status: 403 }, ChannelKind::Inbox, false), Advice::Stop(Fatal::HandshakeForbidden));
/// ```
pub fn advise(disconnect: &Disconnect, channel: ChannelKind, terminal_event: bool) -> Advice {
    use Advice::*;
    if terminal_event && channel == ChannelKind::Campaign {
        // The campaign is over: reconnecting would only replay its end.
        return Finish;
    }
    match disconnect {
        Disconnect::Closed(code) => match code {
            // Without a terminal event a 1000 is no finish, on either channel.
            CloseCode::Normal => Reconnect(Pace::Normal),
            CloseCode::Unauthorized => Stop(Fatal::Unauthorized),
            CloseCode::Forbidden => Stop(Fatal::Forbidden),
            CloseCode::InternalError | CloseCode::TryAgainLater | CloseCode::BadGateway => {
                Reconnect(Pace::Longer)
            }
            _ => Reconnect(Pace::Normal),
        },
        Disconnect::ClosedWithoutCode | Disconnect::Dropped | Disconnect::ConnectFailed => {
            Reconnect(Pace::Normal)
        }
        Disconnect::HandshakeRejected { status } => match *status {
            403 => Stop(Fatal::HandshakeForbidden),
            401 => Stop(Fatal::HandshakeForbidden),
            408 | 429 => Reconnect(Pace::Longer),
            400..=499 => Stop(Fatal::HandshakeRefused(*status)),
            _ => Reconnect(Pace::Normal),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNELS: [ChannelKind; 2] = [ChannelKind::Inbox, ChannelKind::Campaign];

    fn closed(code: u16) -> Disconnect {
        Disconnect::Closed(CloseCode::from_wire(code).unwrap())
    }

    #[test]
    fn normal_close_without_a_terminal_event_reconnects_on_both_channels() {
        for channel in CHANNELS {
            assert_eq!(
                advise(&closed(1000), channel, false),
                Advice::Reconnect(Pace::Normal),
                "{channel:?}"
            );
        }
    }

    #[test]
    fn after_a_terminal_event_a_campaign_finishes_however_it_ends() {
        for disconnect in [
            closed(1000),
            closed(1001),
            closed(1011),
            closed(4401),
            Disconnect::ClosedWithoutCode,
            Disconnect::Dropped,
        ] {
            assert_eq!(
                advise(&disconnect, ChannelKind::Campaign, true),
                Advice::Finish,
                "{disconnect:?}"
            );
            // The inbox has no terminal events: the flag changes nothing there.
            assert_eq!(
                advise(&disconnect, ChannelKind::Inbox, true),
                advise(&disconnect, ChannelKind::Inbox, false),
                "{disconnect:?}"
            );
        }
    }

    #[test]
    fn the_rest_of_the_table() {
        for channel in CHANNELS {
            let at = |d: Disconnect| advise(&d, channel, false);
            for code in [1001, 1008, 1009] {
                assert_eq!(at(closed(code)), Advice::Reconnect(Pace::Normal), "{code}");
            }
            for code in [1011, 1013, 1014] {
                assert_eq!(at(closed(code)), Advice::Reconnect(Pace::Longer), "{code}");
            }
            assert_eq!(at(closed(4401)), Advice::Stop(Fatal::Unauthorized));
            assert_eq!(at(closed(4403)), Advice::Stop(Fatal::Forbidden));
            for d in [
                Disconnect::ClosedWithoutCode,
                Disconnect::Dropped,
                Disconnect::ConnectFailed,
            ] {
                assert_eq!(at(d), Advice::Reconnect(Pace::Normal));
            }
            let http = |status| at(Disconnect::HandshakeRejected { status });
            assert_eq!(http(403), Advice::Stop(Fatal::HandshakeForbidden));
            assert_eq!(http(404), Advice::Stop(Fatal::HandshakeRefused(404)));
            assert_eq!(http(429), Advice::Reconnect(Pace::Longer));
            assert_eq!(http(503), Advice::Reconnect(Pace::Normal));
        }
    }
}
