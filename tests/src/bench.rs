//! The benchmark contract shared by the peer servers and the load generator
//! (`src/bin/naive_axum.rs`, `src/bin/loadgen/`); the full contract, which any server under
//! test implements, is in `bench/README.md`.
//!
//! Every server publishes the same event: a valid `email_received` inbox event (DESIGN.md §2.4)
//! whose `messageId` carries `bench-<seq>-<sentAtNs>`. Putting the marker in a field of the real
//! protocol, rather than in an extra field, lets a server that encodes typed events (ours) take
//! part without a special event type; the load generator finds the marker with a byte search.

use std::time::{SystemTime, UNIX_EPOCH};

/// The path every server under test serves WebSocket upgrades on.
pub const INBOX_PATH: &str = "/mail/ws/inbox";

/// The control endpoint that publishes `count` events of about `size` bytes back to back.
pub const BROADCAST_PATH: &str = "/bench/broadcast";

/// The control endpoint that reports `{"connections": N}`, the sockets the next broadcast reaches.
pub const STATS_PATH: &str = "/bench/stats";

/// Largest `count` a server accepts on [`BROADCAST_PATH`]; keeps a typo from exhausting memory.
pub const MAX_BROADCAST_COUNT: u32 = 1_000_000;

/// Largest `size` a server accepts on [`BROADCAST_PATH`].
pub const MAX_EVENT_SIZE: usize = 1 << 20;

/// What the load generator reads out of an event frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The server's publish sequence number: strictly increasing per server process.
    pub seq: u64,
    /// The wall clock at publish, in nanoseconds since the Unix epoch.
    pub sent_at_ns: u64,
}

/// The wall clock in nanoseconds since the Unix epoch.
///
/// Publisher and load generator run on one machine and read the same clock (CLOCK_REALTIME), so
/// the difference of two readings is a latency. A clock before 1970 reads as 0 and a clock past
/// the year 2554 saturates: neither happens on a benchmark machine, and neither panics.
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

const FRAME_HEAD: &str = r#"{"type":"email_received","from":"bench@example.com","subject":""#;
const MARKER_PREFIX: &[u8] = b"bench-";

/// Builds the event frame with sequence `seq`, stamped `sent_at_ns`, padded (in `subject`) to
/// `size` bytes when `size` is larger than the frame without padding (about 130 bytes).
pub fn event_frame(seq: u64, sent_at_ns: u64, size: usize) -> String {
    let tail = format!(
        r#"","receivedAt":"2026-05-27T10:15:00Z","messageId":"bench-{seq}-{sent_at_ns}"}}"#
    );
    let bare = FRAME_HEAD.len().saturating_add(tail.len());
    let pad = size.saturating_sub(bare);
    let mut frame = String::with_capacity(bare.saturating_add(pad));
    frame.push_str(FRAME_HEAD);
    frame.extend(std::iter::repeat_n('x', pad));
    frame.push_str(&tail);
    frame
}

/// Finds the `bench-<seq>-<sentAtNs>` marker in a frame's payload, searching from the end
/// (where `messageId` sits in the frames above) so a 200-byte frame costs a few dozen compares.
///
/// Returns `None` for a payload without a well-formed marker; never panics.
pub fn parse_marker(payload: &[u8]) -> Option<Marker> {
    let start = payload
        .windows(MARKER_PREFIX.len())
        .rposition(|w| w == MARKER_PREFIX)?;
    let rest = payload.get(start.checked_add(MARKER_PREFIX.len())?..)?;
    let (seq, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(b"-")?;
    let (sent_at_ns, _) = leading_u64(rest)?;
    Some(Marker { seq, sent_at_ns })
}

/// Parses the decimal digits at the start of `bytes`; `None` if there are none or they overflow.
fn leading_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let (number, rest) = bytes.split_at_checked(digits)?;
    let value = number.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })?;
    Some((value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_its_marker_at_any_size() {
        for size in [0, 1, 100, 200, 1000] {
            let frame = event_frame(42, 1_716_800_000_123_456_789, size);
            assert_eq!(
                parse_marker(frame.as_bytes()),
                Some(Marker {
                    seq: 42,
                    sent_at_ns: 1_716_800_000_123_456_789
                })
            );
        }
    }

    #[test]
    fn frame_is_padded_to_the_requested_size_and_valid_json() {
        let frame = event_frame(7, 1_716_800_000_000_000_000, 200);
        assert_eq!(frame.len(), 200);
        let value: serde_json::Value = serde_json::from_str(&frame).expect("valid JSON");
        assert_eq!(value["type"], "email_received");
        assert_eq!(value["messageId"], "bench-7-1716800000000000000");
        assert!(
            frame.starts_with(r#"{"type":"#),
            "type comes first (DESIGN.md §2.4)"
        );
    }

    #[test]
    fn a_size_below_the_bare_frame_gives_the_bare_frame() {
        let frame = event_frame(1, 2, 10);
        assert!(frame.len() > 10);
        assert!(frame.contains(r#""subject":"""#));
    }

    #[test]
    fn malformed_markers_are_none() {
        for payload in [
            &b""[..],
            b"bench-",
            b"bench-12",
            b"bench-12-",
            b"bench--5",
            b"bench-x-5",
            b"bench-99999999999999999999-1",
            b"bench-1-99999999999999999999",
            b"no marker here",
        ] {
            assert_eq!(parse_marker(payload), None, "{payload:?}");
        }
    }

    #[test]
    fn the_last_marker_wins() {
        assert_eq!(
            parse_marker(b"bench-1-2 bench-3-4\"}"),
            Some(Marker {
                seq: 3,
                sent_at_ns: 4
            })
        );
    }

    #[test]
    fn the_clock_reads_after_2020() {
        assert!(unix_now_ns() > 1_577_836_800_000_000_000);
    }
}
