//! The driver: connects, moves messages between tungstenite and the [`ClientSession`], and
//! waits — for a message, the session's timer, the reconnect delay, or a close request. Every
//! decision is the session's.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use misar_proto::client::{
    ClientEvent, ClientOutcome, ClientSession, ClientState, HandshakeFailure, RejectionBody,
    RequestError,
};
use misar_proto::close::Disconnect;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::handshake::{self, Connection, HandshakeError};
use super::update::{Item, Update};
use super::{ReconnectPolicy, SubscriptionError, wire};

/// What woke the driver while a connection was up.
enum Wake {
    Message(Option<Result<WsMessage, WsError>>),
    CloseRequested,
    Timer,
}

pub(super) struct Driver {
    session: ClientSession,
    reconnect: ReconnectPolicy,
    connect_timeout: Duration,
    ws_config: WebSocketConfig,
    connection: Option<Connection>,
    /// When the next attempt may be made (after a backoff delay).
    reconnect_at: Option<Instant>,
    close_requested: watch::Receiver<bool>,
    /// The session was told to close.
    close_applied: bool,
    /// Items for the application, in order.
    ready: VecDeque<Item>,
    /// Nothing follows what is in `ready`.
    ended: bool,
    /// The text or binary message just handed to the session: the event (or the invalid
    /// message) the session reports for it is paired with it.
    raw: Option<Bytes>,
    /// The reason of the last close frame received, for a fatal close's error.
    close_reason: String,
    /// A write failed; the session learns that the transport is gone once the outputs are
    /// drained.
    transport_failed: bool,
}

/// The client's WebSocket read buffer.
const CLIENT_READ_BUFFER: usize = 8 * 1024;

/// The runtime's clock as the core takes it (tokio's, so a paused test clock applies).
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Driver {
    pub(super) fn new(
        session: ClientSession,
        reconnect: ReconnectPolicy,
        connect_timeout: Duration,
        close_requested: watch::Receiver<bool>,
    ) -> Self {
        let max = session.config().max_message;
        // tungstenite's default 128 KiB read buffer stays resident (and is zero-filled on
        // reads) for every subscription; events are small, and larger messages accumulate in
        // the message buffer anyway, so 8 KiB costs nothing in throughput.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(CLIENT_READ_BUFFER)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        Self {
            session,
            reconnect,
            connect_timeout,
            ws_config,
            connection: None,
            reconnect_at: None,
            close_requested,
            close_applied: false,
            ready: VecDeque::new(),
            ended: false,
            raw: None,
            close_reason: String::new(),
            transport_failed: false,
        }
    }

    /// Runs until there is an item for the application; `None` when the subscription is over.
    pub(super) async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            if self.connection.is_none() && self.session.state() == ClientState::Done {
                self.ended = true;
                continue;
            }
            if !self.close_applied && *self.close_requested.borrow_and_update() {
                self.close_applied = true;
                self.session.close(now());
                self.pump().await;
                continue;
            }
            if self.connection.is_some() {
                self.wait_on_connection().await;
            } else if let Some(at) = self.reconnect_at {
                self.wait_to_reconnect(at).await;
            } else {
                self.connect().await;
            }
        }
    }

    /// Resolves when a close is requested; never when `watching` is off (the close was
    /// applied already).
    async fn close_request(close_requested: &mut watch::Receiver<bool>, watching: bool) {
        if !watching {
            return std::future::pending().await;
        }
        if close_requested
            .wait_for(|requested| *requested)
            .await
            .is_err()
        {
            // The handle is gone: nobody can ask any more, so never wake for it.
            std::future::pending::<()>().await;
        }
    }

    async fn wait_on_connection(&mut self) {
        let deadline = self.session.poll_timeout().map(Instant::from_std);
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        let watching = !self.close_applied;
        let wake = tokio::select! {
            // Messages first: after a stall of our own (a slow consumer), data that is already
            // there proves the server alive before the liveness timer is looked at.
            biased;
            message = connection.next() => Wake::Message(message),
            () = Self::close_request(&mut self.close_requested, watching) => Wake::CloseRequested,
            () = sleep_until(deadline) => Wake::Timer,
        };
        match wake {
            Wake::Message(Some(Ok(message))) => self.receive(message),
            Wake::Message(Some(Err(error))) => {
                tracing::debug!(%error, "connection failed");
                self.session.handle_transport_closed(now());
            }
            Wake::Message(None) => self.session.handle_transport_closed(now()),
            // The loop applies it.
            Wake::CloseRequested => return,
            Wake::Timer => self.session.handle_timeout(now()),
        }
        self.pump().await;
    }

    fn receive(&mut self, message: WsMessage) {
        let Some(incoming) = wire::incoming(message) else {
            return;
        };
        match &incoming {
            misar_proto::message::Incoming::Text(raw)
            | misar_proto::message::Incoming::Binary(raw) => self.raw = Some(raw.clone()),
            misar_proto::message::Incoming::Close(close) => {
                self.close_reason = wire::reason_text(&close.reason);
            }
            _ => {}
        }
        self.session.handle_message(incoming, now());
    }

    async fn wait_to_reconnect(&mut self, at: Instant) {
        let watching = !self.close_applied;
        tokio::select! {
            biased;
            () = Self::close_request(&mut self.close_requested, watching) => {}
            () = tokio::time::sleep_until(at) => self.reconnect_at = None,
        }
    }

    async fn connect(&mut self) {
        let request = match self.session.handshake_request() {
            Ok(request) => request,
            Err(RequestError::Ended) => {
                self.ended = true;
                return;
            }
            Err(error) => return self.fail(SubscriptionError::Request(error)),
        };
        let request = match wire::upgrade_request(request) {
            Ok(request) => request,
            Err(error) => return self.fail(SubscriptionError::Request(error)),
        };
        // Our own handshake, not tungstenite's: its writes the request (key included) to a
        // `trace` log record (see handshake.rs).
        let attempt = tokio::time::timeout(
            self.connect_timeout,
            handshake::connect(request, self.ws_config),
        );
        let watching = !self.close_applied;
        let result = tokio::select! {
            biased;
            // Dropping the attempt abandons it; the loop then finishes the idle session.
            () = Self::close_request(&mut self.close_requested, watching) => return,
            result = attempt => result,
        };
        let now = now();
        match result {
            Ok(Ok((connection, headers))) => {
                match self.session.handle_handshake_response_with_headers(
                    http::StatusCode::SWITCHING_PROTOCOLS,
                    &headers,
                    b"",
                    now,
                ) {
                    Ok(()) => {
                        tracing::info!(channel = ?self.session.channel(), "connected");
                        self.connection = Some(connection);
                        self.ready.push_back(Ok(Update::Connected));
                    }
                    Err(failure) => self.handshake_failed(failure),
                }
            }
            Ok(Err(HandshakeError::Refused {
                status,
                headers,
                body,
            })) => {
                match self
                    .session
                    .handle_handshake_response_with_headers(status, &headers, &body, now)
                {
                    Err(failure) => self.handshake_failed(failure),
                    // Only non-101 statuses are refusals; should one be taken for an open
                    // connection, there is no transport behind it.
                    Ok(()) => {
                        self.session.handle_transport_closed(now);
                        self.pump().await;
                    }
                }
            }
            Ok(Err(HandshakeError::TlsUnavailable)) => {
                self.fail(SubscriptionError::TlsUnavailable);
            }
            Ok(Err(error)) => {
                // An I/O error's text is the operating system's; a protocol error's is ours.
                match &error {
                    HandshakeError::Io(io) => {
                        tracing::debug!(error = %io, "connection attempt failed");
                    }
                    HandshakeError::Protocol(what) => {
                        tracing::debug!(error = what, "connection attempt failed");
                    }
                    _ => tracing::debug!("connection attempt failed"),
                }
                let outcome = self.session.handle_connect_failed(now);
                self.conclude(Disconnect::ConnectFailed, outcome, None, None);
            }
            Err(_elapsed) => {
                tracing::debug!("connection attempt timed out");
                let outcome = self.session.handle_connect_failed(now);
                self.conclude(Disconnect::ConnectFailed, outcome, None, None);
            }
        }
    }

    fn handshake_failed(&mut self, failure: HandshakeFailure) {
        let disconnect = Disconnect::HandshakeRejected {
            status: failure.status(),
        };
        self.conclude(
            disconnect,
            failure.outcome(),
            failure.rejection().cloned(),
            failure.retry_after(),
        );
    }

    /// Drains the session: transmits, then events. Repeats if a write failed, so the session
    /// can conclude the connection.
    async fn pump(&mut self) {
        loop {
            while let Some(message) = self.session.poll_transmit() {
                self.transmit(message).await;
            }
            while let Some(event) = self.session.poll_event() {
                self.on_event(event);
            }
            if !std::mem::take(&mut self.transport_failed) {
                return;
            }
            self.session.handle_transport_closed(now());
        }
    }

    async fn transmit(&mut self, message: misar_proto::message::Message) {
        let (Some(connection), Some(message)) = (self.connection.as_mut(), wire::outgoing(message))
        else {
            return;
        };
        // A peer that stopped reading cannot hold us: the session's close grace bounds every
        // write (the client only writes pongs and close frames).
        let grace = self.session.config().close_grace;
        match tokio::time::timeout(grace, connection.send(message)).await {
            Ok(Ok(())) => {}
            // The server's close: tungstenite queued the echo itself when it read it, and
            // refuses a second close. Flushing writes its echo.
            Ok(Err(WsError::Protocol(ProtocolError::SendAfterClosing))) => {
                if !matches!(
                    tokio::time::timeout(grace, connection.flush()).await,
                    Ok(Ok(()))
                ) {
                    self.transport_failed = true;
                }
            }
            // After the server's close, tungstenite already answered it and reports the
            // connection closed: nothing is lost.
            Ok(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                self.transport_failed = true;
            }
            Ok(Err(error)) => {
                tracing::debug!(kind = error_kind(&error), "write failed");
                self.transport_failed = true;
            }
            Err(_elapsed) => {
                tracing::debug!("write timed out");
                self.transport_failed = true;
            }
        }
    }

    fn on_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Event(event) => {
                let raw = self.raw.take().unwrap_or_default();
                let offset = self.session.event_offset();
                self.ready
                    .push_back(Ok(Update::Event { event, raw, offset }));
            }
            ClientEvent::Resumed(frame) => {
                // The frame was the message: the next event has a frame of its own.
                self.raw = None;
                let position = frame.position();
                if frame.recovered {
                    tracing::debug!(%position, "resumed");
                    self.ready.push_back(Ok(Update::Resumed { position }));
                } else {
                    tracing::warn!(%position, "not recovered: events may have been missed");
                    self.ready.push_back(Ok(Update::NotRecovered {
                        position: Some(position),
                    }));
                }
            }
            ClientEvent::ResumeUnanswered => {
                // The message (an event, or an invalid resume frame) is reported on its own.
                tracing::warn!(
                    "the server did not answer the resume opt-in: events may have been missed"
                );
                self.ready
                    .push_back(Ok(Update::NotRecovered { position: None }));
            }
            ClientEvent::Invalid(error) => {
                tracing::warn!(%error, "ignoring a message that is not an event of this channel");
                let raw = self.raw.take().unwrap_or_default();
                self.ready.push_back(Ok(Update::Invalid { error, raw }));
            }
            ClientEvent::Disconnected {
                disconnect,
                outcome,
            } => {
                // The session's last words (the echo of a close) were sent just before.
                self.connection = None;
                self.conclude(disconnect, outcome, None, None);
            }
            _ => {}
        }
    }

    /// Acts on the session's advice after a connection ended or an attempt failed.
    fn conclude(
        &mut self,
        disconnect: Disconnect,
        outcome: ClientOutcome,
        rejection: Option<RejectionBody>,
        retry_after: Option<Duration>,
    ) {
        match outcome {
            ClientOutcome::Reconnect { delay, .. } => {
                let attempt = self.session.backoff().attempts();
                if !self.reconnect.allows(attempt) {
                    tracing::info!(?disconnect, "connection ended; not reconnecting (policy)");
                    return self.fail(SubscriptionError::GaveUp {
                        attempts: attempt.saturating_sub(1),
                        cause: disconnect,
                    });
                }
                tracing::warn!(
                    ?disconnect,
                    ?delay,
                    ?retry_after,
                    attempt,
                    "connection ended; reconnecting"
                );
                let now = Instant::now();
                // Delays are capped by the backoff; an absurd cap just retries at once.
                self.reconnect_at = Some(now.checked_add(delay).unwrap_or(now));
                self.ready.push_back(Ok(Update::Reconnecting {
                    cause: disconnect,
                    after: delay,
                    attempt,
                    retry_after,
                }));
            }
            ClientOutcome::Stop(fatal) => {
                let error = match disconnect {
                    Disconnect::HandshakeRejected { status } => SubscriptionError::Rejected {
                        status,
                        fatal,
                        rejection,
                    },
                    Disconnect::Closed(code) => SubscriptionError::Closed {
                        code,
                        fatal,
                        reason: std::mem::take(&mut self.close_reason),
                    },
                    cause => SubscriptionError::Stopped { fatal, cause },
                };
                tracing::warn!(%error, "subscription stopped");
                self.fail(error);
            }
            // Finish, and anything a newer core may add: the subscription is over.
            _ => {
                tracing::debug!(?disconnect, "subscription finished");
                self.ended = true;
            }
        }
    }

    fn fail(&mut self, error: SubscriptionError) {
        self.connection = None;
        self.ready.push_back(Err(error));
        self.ended = true;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A name for a tungstenite error that cannot leak the URL (and a `?token=` in it).
fn error_kind(error: &WsError) -> &'static str {
    match error {
        WsError::ConnectionClosed => "connection closed",
        WsError::AlreadyClosed => "already closed",
        WsError::Io(_) => "i/o",
        WsError::Tls(_) => "tls",
        WsError::Capacity(_) => "message too large",
        WsError::Protocol(_) => "websocket protocol",
        WsError::WriteBufferFull(_) => "write buffer full",
        WsError::Utf8(_) => "invalid utf-8",
        WsError::AttackAttempt => "attack attempt",
        WsError::Url(_) => "url",
        WsError::Http(_) => "http status",
        WsError::HttpFormat(_) => "http format",
    }
}

/// rustls needs a process-wide crypto provider. Install *ring* unless the application already
/// chose one (then `install_default` fails and the application's choice stands).
#[cfg(feature = "rustls-tls")]
pub(super) fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
