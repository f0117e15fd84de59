//! What a subscription yields: [`Update`] and the driver's item type. Shared by the driver
//! (which produces them) and the subscription views (which hand them out), and importing
//! neither.

use std::time::Duration;

use bytes::Bytes;
use misar_proto::client::InvalidMessage;
use misar_proto::close::Disconnect;
use misar_proto::event::Event;
use misar_proto::resume::Position;

use super::SubscriptionError;

/// What [`Updates`](super::Updates) yields: events and what happened to the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Update {
    /// A connection was established (the first, or a reconnect).
    Connected,
    /// An event, with the text frame it was decoded from.
    Event {
        /// The decoded event.
        event: Event,
        /// The frame as received (shared, not copied).
        raw: Bytes,
        /// The event's `"offset"` in its stream, on an opted-in connection whose opt-in the
        /// server answered (§2.11); `None` otherwise.
        offset: Option<u64>,
    },
    /// The server answered the opt-in (§2.11) with `recovered: true`: every event after
    /// `position` follows (replayed first, then live), none missed. On the first connection
    /// (`new`) the position is the stream's latest and what follows is live.
    Resumed {
        /// The position the subscription holds now.
        position: Position,
    },
    /// Events may have been missed (§2.11): the server answered `recovered: false` (another
    /// epoch, e.g. the server restarted; the position was trimmed from its history; or it
    /// was ahead), or did not answer the opt-in at all (`position: None`, a server without
    /// resume). Refetch the state out of band; events follow live.
    NotRecovered {
        /// The stream's latest position, which the subscription now holds; `None` when the
        /// server did not answer the opt-in.
        position: Option<Position>,
    },
    /// A message that is not an event of this channel (undecodable text, or binary). The
    /// connection stays up.
    Invalid {
        /// What is wrong with it.
        error: InvalidMessage,
        /// The message as received.
        raw: Bytes,
    },
    /// The connection ended (or an attempt failed) and the client reconnects after `after`.
    Reconnecting {
        /// How it ended.
        cause: Disconnect,
        /// The delay: drawn by the core's backoff, or the server's `Retry-After` of a
        /// 429/503 capped by the backoff's cap.
        after: Duration,
        /// Reconnect attempts in a row, this one included (1 after a healthy connection).
        attempt: u32,
        /// The `Retry-After` the server sent with a 429 or 503 (uncapped), if it did.
        retry_after: Option<Duration>,
    },
}

pub(super) type Item = Result<Update, SubscriptionError>;
