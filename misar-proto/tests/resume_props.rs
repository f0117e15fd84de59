//! Resume values (§2.11) under arbitrary input (quickcheck): parsing never panics, what parses
//! prints back to the same text, and every valid position round-trips.

use misar_proto::resume::{Epoch, Position, ResumeRequest, extract_resume};
use quickcheck::{QuickCheck, TestResult};

fn parse_is_total_and_canonical(value: String) -> TestResult {
    match ResumeRequest::parse(&value) {
        Ok(request) => TestResult::from_bool(request.to_string() == value),
        Err(_) => TestResult::passed(),
    }
}

fn positions_round_trip(epoch: String, offset: u64) -> TestResult {
    let epoch: String = epoch
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(32)
        .collect();
    let Ok(epoch) = Epoch::new(&epoch) else {
        return TestResult::discard();
    };
    let position = Position { epoch, offset };
    let text = position.to_string();
    TestResult::from_bool(Position::parse(&text) == Ok(position))
}

fn extraction_never_panics(query: String, header: Option<String>) -> bool {
    let uri = format!("/x?{}", query.replace(['#', ' '], "%20"));
    let Ok(request) = http::Request::get(uri.as_str()).body(()) else {
        return true;
    };
    let mut parts = request.into_parts().0;
    if let Some(value) = header.and_then(|h| http::HeaderValue::from_str(&h).ok()) {
        parts.headers.insert("misar-resume", value);
    }
    let _ = extract_resume(&parts);
    true
}

#[test]
fn resume_values() {
    QuickCheck::new()
        .tests(5000)
        .quickcheck(parse_is_total_and_canonical as fn(String) -> TestResult);
    QuickCheck::new()
        .tests(2000)
        .quickcheck(positions_round_trip as fn(String, u64) -> TestResult);
    QuickCheck::new()
        .tests(2000)
        .quickcheck(extraction_never_panics as fn(String, Option<String>) -> bool);
}

// ----- exactly once, in order, across drops and reconnects (the table and the session) -----

mod exactly_once {
    use bytes::Bytes;
    use misar_proto::auth::AccountId;
    use misar_proto::client::{ClientEvent, ClientSession};
    use misar_proto::event::{EmailReceived, Event, InboxEvent, Timestamp};
    use misar_proto::handshake::{self, HandshakeConfig, Step};
    use misar_proto::message::{Incoming, Message};
    use misar_proto::route::Channel;
    use misar_proto::server::{ServerConfig, ServerOutput, ServerSession};
    use misar_proto::streams::{ConnectionId, StreamKey, Streams, StreamsConfig};
    use misar_proto::testing::{Pair, test_epoch, virtual_epoch};
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    #[derive(Clone, Debug)]
    enum Op {
        Publish,
        /// Hand up to this many outputs to the client.
        Deliver(u8),
        /// The connection drops: whatever the session had not sent is lost with it.
        Drop,
        Reconnect,
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Self {
            match u8::arbitrary(g) % 8 {
                0..=2 => Op::Publish,
                3..=5 => Op::Deliver(u8::arbitrary(g) % 6),
                6 => Op::Drop,
                _ => Op::Reconnect,
            }
        }
    }

    struct Connection {
        id: ConnectionId,
        number: u32,
        session: ServerSession,
    }

    /// The client: a real [`ClientSession`] (it keeps the position and builds the resume
    /// value), and what it received (event numbers), checked as it goes.
    struct Client {
        session: ClientSession,
        received: Vec<u64>,
        failures: Vec<String>,
        /// Events published before the connection being served began.
        published_at_connect: u64,
        /// Events published before the first `resume` frame the client got (`new`: what it
        /// owes nothing for); `None` until it got one.
        baseline: Option<u64>,
    }

    impl Client {
        fn new() -> Self {
            let mut config = Pair::client_config();
            config.resume = true;
            Self {
                session: ClientSession::new(config, Channel::Inbox, 7),
                received: Vec::new(),
                failures: Vec::new(),
                published_at_connect: 0,
                baseline: None,
            }
        }

        fn receive(&mut self, text: Bytes) {
            self.session
                .handle_message(Incoming::Text(text), virtual_epoch());
            while let Some(event) = self.session.poll_event() {
                match event {
                    ClientEvent::Resumed(frame) if frame.recovered => {
                        self.baseline.get_or_insert(self.published_at_connect);
                    }
                    ClientEvent::Event(Event::Inbox(InboxEvent::EmailReceived(email))) => {
                        self.received.push(email.subject.parse().unwrap());
                        if self.session.event_offset().is_none() {
                            self.failures.push("an event without its offset".into());
                        }
                    }
                    other => self.failures.push(format!("unexpected {other:?}")),
                }
            }
        }

        /// The connection is gone (dropped or closed by the server).
        fn lose_connection(&mut self) {
            self.session.handle_transport_closed(virtual_epoch());
            while self.session.poll_event().is_some() {}
        }
    }

    fn connect(
        table: &mut Streams<u32>,
        account: &AccountId,
        client: &mut Client,
        conn: u32,
        published: u64,
    ) -> Option<Connection> {
        let now = virtual_epoch();
        client.published_at_connect = published;
        // The session's own request: `new`, then the last position it saw.
        let (head, ()) = client.session.handshake_request().unwrap().into_parts();
        let Step::NeedsAuthentication(question) =
            handshake::start(&HandshakeConfig::default(), &head)
        else {
            panic!("the handshake refused the client's resume value");
        };
        let Step::Accepted(accepted) = question.authenticated(account.clone()) else {
            panic!("not accepted");
        };
        let request = accepted.resume().cloned();
        let mut session = ServerSession::new(accepted, ServerConfig::default(), now);
        let key = StreamKey::Inbox(account.clone());
        let subscribed = table
            .subscribe_with(account, &key, table.mark(), conn, request.as_ref(), now)
            .ok()?;
        let start = subscribed.resume?;
        session
            .start_resume(&start.recovery.frame, start.replay, start.first, now)
            .unwrap();
        client
            .session
            .handle_handshake_response(http::StatusCode::SWITCHING_PROTOCOLS, b"", now)
            .unwrap();
        Some(Connection {
            id: subscribed.id,
            number: conn,
            session,
        })
    }

    fn email(n: u64) -> InboxEvent {
        InboxEvent::EmailReceived(EmailReceived::new(
            "a@example.com",
            n.to_string(),
            Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
        ))
    }

    fn drain(connection: &mut Connection, client: &mut Client, limit: usize) {
        for _ in 0..limit {
            match connection.session.poll_output() {
                Some(ServerOutput::Transmit(Message::Text(text))) => client.receive(text),
                Some(_) => {}
                None => return,
            }
        }
    }

    fn every_event_once_in_order(ops: Vec<Op>) -> bool {
        let now = virtual_epoch();
        let mut table = Streams::<u32>::new(StreamsConfig::default(), test_epoch()).unwrap();
        let account = AccountId::from("acct");
        let mut client = Client::new();
        let mut published = 0u64;
        let mut next_conn = 0u32;
        let mut connection = connect(&mut table, &account, &mut client, next_conn, published);
        // Within the history bound (256 events), so every position is recoverable.
        for op in ops.into_iter().take(400) {
            match op {
                Op::Publish if published < 250 => {
                    let delivery = table
                        .publish_inbox(&account, &email(published), now)
                        .unwrap();
                    published += 1;
                    if let Some(c) = &mut connection {
                        assert_eq!(delivery.resuming, vec![c.number], "one opted-in subscriber");
                        if c.session.enqueue(delivery.resumable.clone(), now).is_err() {
                            // 1013: the connection is gone.
                            let _ = table.unsubscribe(c.id);
                            connection = None;
                            client.lose_connection();
                        }
                    }
                }
                Op::Publish => {}
                Op::Deliver(k) => {
                    if let Some(c) = &mut connection {
                        drain(c, &mut client, usize::from(k));
                    }
                }
                Op::Drop => {
                    if let Some(c) = connection.take() {
                        let _ = table.unsubscribe(c.id);
                        client.lose_connection();
                    }
                }
                Op::Reconnect => {
                    if let Some(c) = connection.take() {
                        let _ = table.unsubscribe(c.id);
                        client.lose_connection();
                    }
                    next_conn += 1;
                    connection = connect(&mut table, &account, &mut client, next_conn, published);
                }
            }
        }
        // Finally: reconnect and take everything.
        if let Some(c) = connection.take() {
            let _ = table.unsubscribe(c.id);
            client.lose_connection();
        }
        let mut last =
            connect(&mut table, &account, &mut client, next_conn + 1, published).unwrap();
        drain(&mut last, &mut client, usize::MAX);
        // From the first `resume` frame it got on, it owes every event, once, in order.
        let expected: Vec<u64> = (client.baseline.unwrap_or(published)..published).collect();
        client.failures.is_empty() && client.received == expected
    }

    #[test]
    fn an_opted_in_client_gets_every_event_exactly_once_in_order() {
        QuickCheck::new()
            .tests(300)
            .quickcheck(every_event_once_in_order as fn(Vec<Op>) -> bool);
    }
}
