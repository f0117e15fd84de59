//! [`ServerConfig::validate`]: the rules, and why each value is refused.

use super::{MIN_PING_INTERVAL, ServerConfig};
use crate::config::{ConfigError, at_least, nonzero_count, nonzero_duration};

impl ServerConfig {
    /// Checks the configuration; the first refused field (in declaration order) is reported.
    ///
    /// | field | refused | why |
    /// |---|---|---|
    /// | `ping_interval` | below 1 ms (zero included) | the session would wake up in a busy loop; it clamps to 1 ms |
    /// | `pong_timeout` | zero | the pong deadline would pass at the ping itself: every connection closes with 1001 at its first ping |
    /// | `close_grace` | zero | the close handshake could never complete: every close ends by dropping the transport, and a driver that pauses draining under write back-pressure (as allowed) loses the close frame itself (1000, 4401, 4403), so the client sees 1006 |
    /// | `max_queued_events` | zero | the first event overflows the queue: every connection closes with 1013 at once |
    /// | `max_queued_bytes` | zero | the same: no encoded event is empty |
    /// | `client_message_burst` | zero | the bucket is always empty: the first client message, even a ping, closes with 1008 |
    /// | `client_message_refill` | zero | ambiguous (never, or instantly?); the session treats it as 1 ns, i.e. no rate limit at all. Write a tiny period on purpose to lift the limit |
    ///
    /// Accepted on purpose: `max_client_message` 0 (the protocol is server-push, so refusing
    /// every non-empty client message with 1009 is a strict but coherent policy), and any
    /// large value (durations too large for `Instant` disable their timer). Keep
    /// `max_queued_bytes` above the largest event published (the hub's `max_event_bytes`,
    /// 64 KiB by default), or such an event closes the connection with 1013.
    ///
    /// [`ServerSession::new`](super::ServerSession::new) does not call this (a session can
    /// always be built); it clamps `ping_interval` and `client_message_refill` as described,
    /// and gives the other refused values the effects listed. Adapters validate where they
    /// build their configuration.
    ///
    /// ```
    /// use std::time::Duration;
    /// use misar_proto::config::ConfigProblem;
    /// use misar_proto::server::ServerConfig;
    ///
    /// let config = ServerConfig { max_queued_events: 0, ..ServerConfig::default() };
    /// let error = config.validate().unwrap_err();
    /// assert_eq!(error.field, "max_queued_events");
    /// assert_eq!(error.problem, ConfigProblem::Zero);
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("ping_interval", self.ping_interval, MIN_PING_INTERVAL)?;
        nonzero_duration("pong_timeout", self.pong_timeout)?;
        nonzero_duration("close_grace", self.close_grace)?;
        nonzero_count("max_queued_events", count(self.max_queued_events))?;
        nonzero_count("max_queued_bytes", count(self.max_queued_bytes))?;
        nonzero_count("client_message_burst", u64::from(self.client_message_burst))?;
        nonzero_duration("client_message_refill", self.client_message_refill)?;
        Ok(())
    }
}

/// A `usize` as a `u64` for the zero check (saturating: only zero matters).
fn count(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ConfigProblem;

    fn refused(config: ServerConfig) -> (&'static str, ConfigProblem) {
        let error = config.validate().expect_err("refused");
        (error.field, error.problem)
    }

    #[test]
    fn the_default_is_valid() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn each_rule() {
        let d = ServerConfig::default;
        let min = ConfigProblem::BelowMinimum {
            minimum: Duration::from_millis(1),
        };
        let zero = ConfigProblem::Zero;
        let cases = [
            (
                ServerConfig {
                    ping_interval: Duration::ZERO,
                    ..d()
                },
                ("ping_interval", min),
            ),
            (
                ServerConfig {
                    ping_interval: Duration::from_micros(999),
                    ..d()
                },
                ("ping_interval", min),
            ),
            (
                ServerConfig {
                    pong_timeout: Duration::ZERO,
                    ..d()
                },
                ("pong_timeout", zero),
            ),
            (
                ServerConfig {
                    close_grace: Duration::ZERO,
                    ..d()
                },
                ("close_grace", zero),
            ),
            (
                ServerConfig {
                    max_queued_events: 0,
                    ..d()
                },
                ("max_queued_events", zero),
            ),
            (
                ServerConfig {
                    max_queued_bytes: 0,
                    ..d()
                },
                ("max_queued_bytes", zero),
            ),
            (
                ServerConfig {
                    client_message_burst: 0,
                    ..d()
                },
                ("client_message_burst", zero),
            ),
            (
                ServerConfig {
                    client_message_refill: Duration::ZERO,
                    ..d()
                },
                ("client_message_refill", zero),
            ),
        ];
        for (config, want) in cases {
            assert_eq!(refused(config), want);
        }
    }

    #[test]
    fn the_smallest_accepted_values_and_the_deliberate_ones() {
        let config = ServerConfig {
            ping_interval: Duration::from_millis(1),
            pong_timeout: Duration::from_nanos(1),
            close_grace: Duration::from_nanos(1),
            max_queued_events: 1,
            max_queued_bytes: 1,
            max_client_message: 0,
            client_message_burst: 1,
            client_message_refill: Duration::from_nanos(1),
        };
        assert_eq!(config.validate(), Ok(()));
        let huge = ServerConfig {
            ping_interval: Duration::MAX,
            pong_timeout: Duration::MAX,
            close_grace: Duration::MAX,
            max_queued_events: usize::MAX,
            max_queued_bytes: usize::MAX,
            max_client_message: usize::MAX,
            client_message_burst: u32::MAX,
            client_message_refill: Duration::MAX,
        };
        assert_eq!(huge.validate(), Ok(()));
    }

    /// The effects the table above gives as reasons, on a session built anyway.
    mod why {
        use bytes::Bytes;

        use super::*;
        use crate::auth::{AccountId, CredentialSource};
        use crate::event::{EncodedEvent, EventClass};
        use crate::handshake::Accepted;
        use crate::message::{Incoming, Message};
        use crate::route::Channel;
        use crate::server::{ServerOutput, ServerSession};

        fn session(config: ServerConfig) -> (ServerSession, std::time::Instant) {
            let now = crate::testing::virtual_epoch();
            let accepted = Accepted::for_tests(
                AccountId::from("a"),
                Channel::Inbox,
                CredentialSource::Header,
            );
            (ServerSession::new(accepted, config, now), now)
        }

        fn sent_close(session: &mut ServerSession) -> Option<u16> {
            std::iter::from_fn(|| session.poll_output()).find_map(|o| match o {
                ServerOutput::Transmit(Message::Close(Some(frame))) => Some(frame.code.as_u16()),
                _ => None,
            })
        }

        #[test]
        fn zero_pong_timeout_closes_at_the_first_ping() {
            let (mut s, t0) = session(ServerConfig {
                pong_timeout: Duration::ZERO,
                ..ServerConfig::default()
            });
            let ping = t0 + Duration::from_secs(30);
            s.handle_timeout(ping);
            // The ping goes out, and its deadline is already due: no pong can be in time.
            assert_eq!(s.poll_timeout(), Some(ping));
            assert!(matches!(
                s.poll_output(),
                Some(ServerOutput::Transmit(Message::Ping(_)))
            ));
            s.handle_timeout(ping);
            assert_eq!(sent_close(&mut s), Some(1001));
        }

        #[test]
        fn zero_queue_bounds_close_at_the_first_event() {
            for config in [
                ServerConfig {
                    max_queued_events: 0,
                    ..ServerConfig::default()
                },
                ServerConfig {
                    max_queued_bytes: 0,
                    ..ServerConfig::default()
                },
            ] {
                let (mut s, t0) = session(config);
                let event = EncodedEvent::from_parts_for_tests(
                    Bytes::from_static(b"{}"),
                    EventClass::Ordinary,
                );
                assert!(s.enqueue(event, t0).is_err());
                assert_eq!(sent_close(&mut s), Some(1013));
            }
        }

        #[test]
        fn zero_burst_closes_at_the_first_client_ping() {
            let (mut s, t0) = session(ServerConfig {
                client_message_burst: 0,
                ..ServerConfig::default()
            });
            s.handle_message(Incoming::Ping(Bytes::new()), t0);
            assert_eq!(sent_close(&mut s), Some(1008));
        }

        #[test]
        fn zero_refill_lifts_the_rate_limit() {
            let (mut s, t0) = session(ServerConfig {
                client_message_burst: 1,
                client_message_refill: Duration::ZERO,
                ..ServerConfig::default()
            });
            for n in 0..1000u32 {
                s.handle_message(
                    Incoming::Text(Bytes::new()),
                    t0 + Duration::from_nanos(n.into()),
                );
            }
            assert_eq!(sent_close(&mut s), None);
        }

        #[test]
        fn zero_close_grace_drops_without_waiting_for_the_peer() {
            let (mut s, t0) = session(ServerConfig {
                close_grace: Duration::ZERO,
                ..ServerConfig::default()
            });
            s.shutdown(t0);
            // A driver under write back-pressure that wakes for the timer first loses the
            // close frame: the session goes straight to dropping the transport.
            s.handle_timeout(t0);
            let outputs: Vec<_> = std::iter::from_fn(|| s.poll_output()).collect();
            assert!(
                matches!(outputs.first(), Some(ServerOutput::DropTransport)),
                "{outputs:?}"
            );
            assert!(
                !outputs
                    .iter()
                    .any(|o| matches!(o, ServerOutput::Transmit(Message::Close(_))))
            );
        }
    }

    #[test]
    fn the_first_refused_field_is_reported() {
        let config = ServerConfig {
            close_grace: Duration::ZERO,
            max_queued_bytes: 0,
            ..ServerConfig::default()
        };
        assert_eq!(refused(config).0, "close_grace");
    }
}
