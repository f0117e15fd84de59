//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (cargo feature `metrics`).
//!
//! The library only *records*: it never installs a recorder or an exporter. The application
//! installs one (e.g. `metrics-exporter-prometheus`), then may call [`describe`] once so every
//! family below has its help text and unit. Without the feature nothing is compiled in: the
//! recording functions are empty, and [`describe`] does nothing.
//!
//! Values are recorded where the decisions are made: the hub's delivery (one place for
//! every connection of a stream), the end of [`serve_connection`](crate::server::serve_connection)
//! (the core's [`CloseSummary`](misar_proto::server::CloseSummary)), the Redis broker's
//! subscriber, and (in `misar-proto-axum`) the router's handshake outcome.
//!
//! Labels are bounded: a channel *kind*, an event type from the protocol's list, a close code,
//! who closed, an outcome. Never an account, a campaign id, a key or a path.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `misar_connections_open` | gauge | `channel` = `inbox`\|`campaign` | connections subscribed to the hub and not yet ended (up at [`Hub::subscribe`](crate::hub::Hub::subscribe), down when the [`Feed`](crate::hub::Feed) is dropped) |
//! | `misar_handshakes_total` | counter | `outcome` = `accepted`\|`unauthorized`\|`forbidden`\|`not_found`\|`bad_request`\|`method_not_allowed`\|`origin_refused`\|`hook_failed`\|`timed_out`\|`overloaded`\|`too_many_for_account` | handshakes answered by the axum router (`misar-proto-axum`), by outcome |
//! | `misar_closes_total` | counter | `code` (the close code as a number, `none` without a close frame), `by` = `server`\|`client`\|`transport` | connections ended, by the close code of the handshake and who ended it: the server's session sent the close first, the peer's close came first, or the transport dropped (or a write timed out) before any close frame |
//! | `misar_events_published_total` | counter | `channel`, `type` (the protocol's event types; `unknown` otherwise) | events accepted by [`Hub::publish_inbox`](crate::hub::Hub::publish_inbox) / [`publish_campaign`](crate::hub::Hub::publish_campaign) on this node |
//! | `misar_deliveries_total` | counter | `channel` | events queued for a connection (one per connection per event) |
//! | `misar_progress_coalesced_total` | counter | — | queued `progress` events superseded by a newer one before they were sent (read from the session when the connection ends) |
//! | `misar_queue_overflows_total` | counter | — | connections closed with 1013 because their queue overflowed (slow consumers) |
//! | `misar_write_timeouts_total` | counter | — | connections dropped because writing a batch exceeded the driver's write timeout |
//! | `misar_queue_depth` | histogram | — | events queued in a connection's session when its driver takes a batch (sampled: a connection's first batch of events, then one in 16) |
//! | `misar_publish_to_flush_seconds` | histogram (seconds) | — | from the hub queueing the oldest event of a batch for a connection to the flush of that batch (per batch, not per event, sampled as `misar_queue_depth`; with the in-process broker the queueing happens inside the publish call) |
//! | `misar_redis_reconnects_total` | counter | — | the Redis subscriber connection re-established after a loss (feature `redis`) |
//! | `misar_redis_gaps_total` | counter | — | the Redis subscription was lost: events published meanwhile may be missing on this node |
//! | `misar_redis_relayed_total` | counter | — | events received from Redis that were valid and handed to this node's hubs |
//! | `misar_redis_subscribe_seconds` | histogram (seconds) | — | one `SUBSCRIBE` batch, sent to confirmed |
//! | `misar_resumes_total` | counter | `recovered` = `true`\|`false` | §2.11 decisions for opted-in connections, by the `recovered` of their `resume` frame |
//! | `misar_replayed_events_total` | counter | — | missed events replayed to resuming connections |

/// The metric names, for dashboards and tests.
pub mod names {
    /// Gauge, label `channel`.
    pub const CONNECTIONS_OPEN: &str = "misar_connections_open";
    /// Counter, label `outcome` (recorded by `misar-proto-axum`).
    pub const HANDSHAKES: &str = "misar_handshakes_total";
    /// Counter, labels `code` and `by`.
    pub const CLOSES: &str = "misar_closes_total";
    /// Counter, labels `channel` and `type`.
    pub const EVENTS_PUBLISHED: &str = "misar_events_published_total";
    /// Counter, label `channel`.
    pub const DELIVERIES: &str = "misar_deliveries_total";
    /// Counter.
    pub const PROGRESS_COALESCED: &str = "misar_progress_coalesced_total";
    /// Counter.
    pub const QUEUE_OVERFLOWS: &str = "misar_queue_overflows_total";
    /// Counter.
    pub const WRITE_TIMEOUTS: &str = "misar_write_timeouts_total";
    /// Histogram (events).
    pub const QUEUE_DEPTH: &str = "misar_queue_depth";
    /// Histogram (seconds).
    pub const PUBLISH_TO_FLUSH: &str = "misar_publish_to_flush_seconds";
    /// Counter (feature `redis`).
    pub const REDIS_RECONNECTS: &str = "misar_redis_reconnects_total";
    /// Counter (feature `redis`).
    pub const REDIS_GAPS: &str = "misar_redis_gaps_total";
    /// Counter (feature `redis`).
    pub const REDIS_RELAYED: &str = "misar_redis_relayed_total";
    /// Histogram (seconds, feature `redis`).
    pub const REDIS_SUBSCRIBE: &str = "misar_redis_subscribe_seconds";
    /// Counter, label `recovered`.
    pub const RESUMES: &str = "misar_resumes_total";
    /// Counter.
    pub const REPLAYED_EVENTS: &str = "misar_replayed_events_total";
}

/// Registers the help text and unit of every family above with the installed recorder. Call
/// it once, after installing the recorder (calling it again is harmless). Does nothing
/// without the `metrics` feature.
pub fn describe() {
    #[cfg(feature = "metrics")]
    imp::describe();
}

/// The `channel` label of a stream.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn channel_label(stream: &misar_proto::streams::StreamKey) -> &'static str {
    match stream {
        misar_proto::streams::StreamKey::Inbox(_) => "inbox",
        _ => "campaign",
    }
}

/// Who ended a connection, and the code of its close handshake, as the labels of
/// `misar_closes_total`. A peer's code outside 1000–1015 is `other` (the label stays bounded
/// whatever a client sends); the server's own codes are the protocol's, counted when the server
/// decided them even if the frame could not be sent (a slow consumer's 1013).
#[cfg(feature = "metrics")]
pub(crate) fn close_labels(
    summary: &misar_proto::server::CloseSummary,
    write_timed_out: bool,
) -> (String, &'static str) {
    use misar_proto::server::CloseCause;
    match summary.cause {
        CloseCause::PeerClosed => {
            let code = match summary.received.as_ref().and_then(|r| r.code) {
                Some(code @ 1000..=1015) => code.to_string(),
                Some(_) => "other".to_owned(),
                None => "none".to_owned(),
            };
            (code, "client")
        }
        CloseCause::TransportClosed => ("none".to_owned(), "transport"),
        // The server decided: its code, whether or not the frame got out (a slow consumer's
        // 1013 usually cannot, its socket being full).
        _ => match summary.sent_code.or(summary.decided_code) {
            Some(code) => (code.as_u16().to_string(), "server"),
            None if write_timed_out => ("none".to_owned(), "transport"),
            None => ("none".to_owned(), "server"),
        },
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use super::names::*;
    use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram};

    pub(super) fn describe() {
        describe_gauge!(
            CONNECTIONS_OPEN,
            Unit::Count,
            "Connections subscribed to the hub and not yet ended, by channel kind."
        );
        describe_counter!(
            HANDSHAKES,
            Unit::Count,
            "WebSocket handshakes answered by the router, by outcome."
        );
        describe_counter!(
            CLOSES,
            Unit::Count,
            "Connections ended, by close code (none: no close frame) and by who ended them."
        );
        describe_counter!(
            EVENTS_PUBLISHED,
            Unit::Count,
            "Events published on this node, by channel kind and event type."
        );
        describe_counter!(
            DELIVERIES,
            Unit::Count,
            "Events queued for a connection (one per connection per event), by channel kind."
        );
        describe_counter!(
            PROGRESS_COALESCED,
            Unit::Count,
            "Queued progress events superseded by a newer one before they were sent."
        );
        describe_counter!(
            QUEUE_OVERFLOWS,
            Unit::Count,
            "Connections closed with 1013 because their outbound queue overflowed."
        );
        describe_counter!(
            WRITE_TIMEOUTS,
            Unit::Count,
            "Connections dropped because writing a batch exceeded the write timeout."
        );
        describe_histogram!(
            QUEUE_DEPTH,
            Unit::Count,
            "Events queued in a connection's session right after the hub queued one."
        );
        describe_histogram!(
            PUBLISH_TO_FLUSH,
            Unit::Seconds,
            "From queueing the oldest event of a batch for a connection to the batch's flush."
        );
        describe_counter!(
            REDIS_RECONNECTS,
            Unit::Count,
            "Redis subscriber connection re-established after a loss."
        );
        describe_counter!(
            REDIS_GAPS,
            Unit::Count,
            "Redis subscription lost: events published meanwhile may be missing on this node."
        );
        describe_counter!(
            REDIS_RELAYED,
            Unit::Count,
            "Events received from Redis and handed to this node's hubs."
        );
        describe_histogram!(
            REDIS_SUBSCRIBE,
            Unit::Seconds,
            "One Redis SUBSCRIBE batch, from sent to confirmed."
        );
        describe_counter!(
            RESUMES,
            Unit::Count,
            "Resume decisions for opted-in connections, by whether they recovered."
        );
        describe_counter!(
            REPLAYED_EVENTS,
            Unit::Count,
            "Missed events replayed to resuming connections."
        );
        // Touch the label-less counters so a scrape lists them at 0 from the start.
        for name in [
            PROGRESS_COALESCED,
            QUEUE_OVERFLOWS,
            WRITE_TIMEOUTS,
            REPLAYED_EVENTS,
        ] {
            counter!(name).increment(0);
        }
    }
}

/// Counts one handshake's outcome in `misar_handshakes_total{outcome}` (nothing without the
/// `metrics` feature). For server adapters, which decide the outcome before any connection
/// exists (`misar-proto-axum`'s router calls it); `outcome` must be one of the values listed
/// in the module docs, so the label stays bounded.
pub fn handshake(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::HANDSHAKES, "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// The recording functions: empty without the feature, so call sites need no `cfg`.
#[cfg(feature = "metrics")]
pub(crate) mod record {
    use std::time::Instant;

    use metrics::{counter, gauge, histogram};

    use super::names::*;

    pub(crate) fn connection_opened(channel: &'static str) {
        gauge!(CONNECTIONS_OPEN, "channel" => channel).increment(1.0);
    }
    pub(crate) fn connection_closed(channel: &'static str) {
        gauge!(CONNECTIONS_OPEN, "channel" => channel).decrement(1.0);
    }
    pub(crate) fn published(channel: &'static str, kind: &'static str) {
        counter!(EVENTS_PUBLISHED, "channel" => channel, "type" => kind).increment(1);
    }
    pub(crate) fn delivered(channel: &'static str, count: usize) {
        if count > 0 {
            counter!(DELIVERIES, "channel" => channel).increment(count as u64);
        }
    }
    pub(crate) fn queue_depth(depth: usize) {
        histogram!(QUEUE_DEPTH).record(depth as f64);
    }
    pub(crate) fn overflowed(count: usize) {
        if count > 0 {
            counter!(QUEUE_OVERFLOWS).increment(count as u64);
        }
    }
    pub(crate) fn closed(summary: &misar_proto::server::CloseSummary, write_timed_out: bool) {
        let (code, by) = super::close_labels(summary, write_timed_out);
        counter!(CLOSES, "code" => code, "by" => by).increment(1);
    }
    pub(crate) fn coalesced(count: u64) {
        if count > 0 {
            counter!(PROGRESS_COALESCED).increment(count);
        }
    }
    pub(crate) fn write_timeout() {
        counter!(WRITE_TIMEOUTS).increment(1);
    }
    pub(crate) fn flushed(since: Instant, now: Instant) {
        histogram!(PUBLISH_TO_FLUSH).record(now.saturating_duration_since(since).as_secs_f64());
    }
    pub(crate) fn resumed(recovered: bool, replayed: usize) {
        counter!(RESUMES, "recovered" => if recovered { "true" } else { "false" }).increment(1);
        if replayed > 0 {
            counter!(REPLAYED_EVENTS).increment(replayed as u64);
        }
    }
    #[cfg(feature = "redis")]
    pub(crate) fn redis_reconnect() {
        counter!(REDIS_RECONNECTS).increment(1);
    }
    #[cfg(feature = "redis")]
    pub(crate) fn redis_gap() {
        counter!(REDIS_GAPS).increment(1);
    }
    #[cfg(feature = "redis")]
    pub(crate) fn redis_relayed() {
        counter!(REDIS_RELAYED).increment(1);
    }
    #[cfg(feature = "redis")]
    pub(crate) fn redis_subscribed(took: std::time::Duration) {
        histogram!(REDIS_SUBSCRIBE).record(took.as_secs_f64());
    }
}

/// The recording functions: empty without the feature, so call sites need no `cfg`.
#[cfg(not(feature = "metrics"))]
#[allow(dead_code)]
pub(crate) mod record {
    use std::time::Instant;

    pub(crate) fn connection_opened(_: &'static str) {}
    pub(crate) fn connection_closed(_: &'static str) {}
    pub(crate) fn published(_: &'static str, _: &'static str) {}
    pub(crate) fn delivered(_: &'static str, _: usize) {}
    pub(crate) fn queue_depth(_: usize) {}
    pub(crate) fn overflowed(_: usize) {}
    pub(crate) fn closed(_: &misar_proto::server::CloseSummary, _: bool) {}
    pub(crate) fn coalesced(_: u64) {}
    pub(crate) fn write_timeout() {}
    pub(crate) fn flushed(_: Instant, _: Instant) {}
    pub(crate) fn resumed(_: bool, _: usize) {}
    #[cfg(feature = "redis")]
    pub(crate) fn redis_reconnect() {}
    #[cfg(feature = "redis")]
    pub(crate) fn redis_gap() {}
    #[cfg(feature = "redis")]
    pub(crate) fn redis_relayed() {}
    #[cfg(feature = "redis")]
    pub(crate) fn redis_subscribed(_: std::time::Duration) {}
}

#[cfg(test)]
mod tests {
    use misar_proto::event::{decode_campaign, decode_inbox};

    /// The `type` label comes from the core's known types: an unknown one (whatever a
    /// relayed producer sent) has none, so the hub labels it `unknown`.
    #[test]
    fn type_labels_are_bounded() {
        let email = br#"{"type":"email_received","from":"a@b","subject":"s","receivedAt":"2026-05-27T10:15:00Z"}"#;
        let known = decode_inbox(email).unwrap();
        assert_eq!(known.known_type_name(), Some(known.type_name()));
        assert_eq!(
            decode_inbox(br#"{"type":"acct-1"}"#)
                .unwrap()
                .known_type_name(),
            None
        );
        let progress = decode_campaign(
            br#"{"type":"progress","campaignId":"c","sent":1,"total":2,"delivered":1,"bounced":0,"opened":0}"#,
        )
        .unwrap();
        assert_eq!(progress.known_type_name(), Some("progress"));
        assert_eq!(
            decode_campaign(br#"{"type":"paused"}"#)
                .unwrap()
                .known_type_name(),
            None
        );
    }
}
