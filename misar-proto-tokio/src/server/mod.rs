//! The async driver of one [`ServerSession`]: [`serve_connection`].
//!
//! The driver owns the transport and follows the core's drain rule: after every input (a
//! message, the end of the transport, a timer, a wake-up from the hub) it drains
//! [`ServerSession::poll_output`], writes what it got, then waits for the next input.
//!
//! - **One timer per connection**: a single [`tokio::time::Sleep`], `reset` to
//!   [`ServerSession::poll_timeout`] (and, while a batch waits on a full socket, to the write
//!   deadline); never re-created.
//! - **Batched writes**: up to [`DriverConfig::max_batch`] messages are written with
//!   [`SinkExt::feed`], then flushed once (under a [`WriteCoalescer`], that is one system
//!   call per batch).
//! - **Little per wake-up**: one wake-up registration with the hub for the connection's life;
//!   the transport is read before a timer fires only when a deadline depends on it (a pong, the
//!   close); an idle connection holds no batch-sized buffer. (`BENCHMARKS.md` measures why.)
//! - **Write timeout**: a batch that does not complete within
//!   [`DriverConfig::write_timeout`] ends the connection, so a peer that stopped reading
//!   cannot hold a task (nor its memory) forever.
//! - **Queueing while writing**: the session lives in the connection's [`Feed`], so the hub
//!   keeps queueing into it while the driver waits for a slow write; coalescing and the 1013
//!   of an overflow happen in the session, not here.
//! - **Transport failures are the session's to judge**: a transport's error says, through
//!   [`TransportError::violation`], whether the peer broke a rule (an oversized message, a
//!   bad frame, invalid UTF-8); the session then closes with 1009/1002/1007 itself. The driver
//!   knows no WebSocket library's error type.
//!
//! # Example: a tokio-tungstenite server
//!
//! ```no_run
//! use misar_proto::handshake::Accepted;
//! use misar_proto::server::ServerConfig;
//! use misar_proto_tokio::hub::{Hub, RevocationMark};
//! use misar_proto_tokio::server::{
//!     recommended_websocket_config, serve_connection, DriverConfig, TungsteniteTransport,
//! };
//!
//! // `mark` is `hub.mark()`, taken before the handshake's hooks ran.
//! async fn serve(hub: Hub, tcp: tokio::net::TcpStream, accepted: Accepted, mark: RevocationMark) {
//!     // Before the upgrade: count the connection and create its session (a refusal is an
//!     // HTTP 429/503).
//!     let Ok(feed) = hub.subscribe(accepted, mark, &ServerConfig::default()) else { return };
//!     // With a multi-node broker: every event published from now on will reach this
//!     // connection (answer 503 instead when it cannot be promised).
//!     if feed.ready().await.is_err() {
//!         return;
//!     }
//!     let config = recommended_websocket_config();
//!     let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
//!         return; // dropping the feed uncounts the connection
//!     };
//!     let end = serve_connection(TungsteniteTransport::new(ws), feed, DriverConfig::default()).await;
//!     tracing::debug!(?end, "connection over");
//! }
//! ```

mod coalesce;
mod tungstenite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use misar_proto::message::{Incoming, Message, Violation};
use misar_proto::server::{CloseSummary, ServerOutput, ServerSession, SessionState};
use tokio::sync::futures::Notified;
use tokio::time::Sleep;

use crate::hub::{Feed, lock, now};

pub use self::coalesce::WriteCoalescer;
pub use self::tungstenite::{
    TungsteniteTransport, incoming_from_tungstenite, recommended_websocket_config,
};

/// Settings of [`serve_connection`]. `Default` gives the values below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Writing one batch (its `feed`s and its flush) taking longer than this ends the
    /// connection (10 s).
    pub write_timeout: Duration,
    /// At most this many messages between two flushes (256, the session's default queue bound:
    /// a full queue goes out in one write; 0 is taken as 1). Between batches, the driver takes
    /// what the peer sent and fires due timers.
    pub max_batch: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            write_timeout: Duration::from_secs(10),
            max_batch: 256,
        }
    }
}

/// How a connection served by [`serve_connection`] ended. Every variant carries the session's
/// own [`CloseSummary`] (why it closed, which close frames went each way, events sent and
/// discarded). No variant contains secrets.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectionEnd {
    /// The session ran to its end: a close handshake, a close grace that expired, or the
    /// peer going away (`summary.ending` tells which).
    Closed(CloseSummary),
    /// Writing a batch took longer than [`DriverConfig::write_timeout`]: the peer stopped
    /// reading. The transport was dropped.
    WriteTimeout(CloseSummary),
    /// The transport failed (reading or writing).
    TransportError {
        /// The session's account of the close.
        summary: CloseSummary,
        /// The transport's error.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The hub gave up on the connection when its shutdown grace ran out.
    Aborted(CloseSummary),
}

impl ConnectionEnd {
    /// The session's account of the close.
    pub fn summary(&self) -> &CloseSummary {
        match self {
            ConnectionEnd::Closed(summary)
            | ConnectionEnd::WriteTimeout(summary)
            | ConnectionEnd::Aborted(summary)
            | ConnectionEnd::TransportError { summary, .. } => summary,
        }
    }
}

/// Why the driver stopped using the transport before the session finished.
enum Failure<E> {
    WriteTimeout,
    Transport(E),
    Aborted,
}

/// A transport's error, as [`serve_connection`] needs to know it: whether it is the peer's
/// fault (a [`Violation`], which the session answers with a close code while the transport
/// can still write) or the transport's end.
pub trait TransportError: std::error::Error + Send + Sync + 'static {
    /// The rule the peer broke, if this error reports one; `None` when the transport itself
    /// failed (I/O, reset, closed).
    fn violation(&self) -> Option<Violation>;
}

impl TransportError for std::io::Error {
    fn violation(&self) -> Option<Violation> {
        None
    }
}

/// Drives the session of `feed` over `transport` until the connection ends, delivering what
/// the hub queues for it; returns how it ended.
///
/// `transport` is any `Stream` of received messages plus `Sink` of messages to send:
/// [`TungsteniteTransport`] adapts tokio-tungstenite, and an adapter for another WebSocket
/// library only maps message types and says which of its errors are the peer's
/// ([`TransportError`]). The returned future is `Send` when the transport is.
///
/// Dropping the future drops the connection (and its feed, so the hub's counts stay exact).
pub async fn serve_connection<T, E>(
    mut transport: T,
    feed: Feed,
    config: DriverConfig,
) -> ConnectionEnd
where
    T: Stream<Item = Result<Incoming, E>> + Sink<Message, Error = E> + Unpin,
    E: TransportError,
{
    let session = feed.session();
    let max_batch = config.max_batch.max(1);
    let mut batch: Vec<Message> = Vec::new();
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    // What the timer is set to (`None`: it is stale and must be reset before use).
    let mut armed: Option<Instant> = None;
    let mut failure: Option<Failure<E>> = None;
    // The stream said it ended: it is not polled again (a stream need not be fused).
    let mut transport_ended = false;
    // One wake-up registration for the connection's life, renewed only after it fired (a
    // fresh `notified()` per wait would register and unregister a waiter every time).
    let notified = feed.notified();
    tokio::pin!(notified);
    // Batches of events taken so far: the per-batch histograms (queue depth, publish →
    // flush) sample one in `SAMPLE_EVERY`, the first one always.
    let mut batches: u32 = 0;

    loop {
        // 1. Drain the session's outputs.
        if failure.is_none() && feed.is_aborted() {
            failure = Some(Failure::Aborted);
            lock(session).handle_transport_closed(now());
        }
        let Drained {
            closed,
            deadline,
            more,
            queued_since,
            had_events,
        } = drain(&feed, &mut batch, max_batch, batches % SAMPLE_EVERY == 0);
        if had_events {
            batches = batches.wrapping_add(1);
        }
        if failure.is_some() {
            // The transport is unusable: nothing more goes to it.
            batch.clear();
        }

        // 2. Write them: `feed` each, one flush.
        let wrote = !batch.is_empty();
        // The hub woke us while the batch was being written (the wake-up is consumed there).
        let mut woken = false;
        if wrote {
            // Boxed: the write's state (the sink's feed and flush futures, its own select) lives
            // only while a batch is written, so an idle connection's task does not carry it
            // (about 280 B per connection, BENCHMARKS.md B2); one allocation per batch.
            let written = Box::pin(write_batch(
                &mut transport,
                &mut batch,
                &feed,
                notified.as_mut(),
                timer.as_mut(),
                &mut armed,
                &mut woken,
                &config,
            ))
            .await;
            batch.clear();
            if let (Ok(()), Some(since)) = (&written, queued_since) {
                crate::metrics::record::flushed(since, now());
            }
            if let Err(error) = written {
                if closed.is_none() {
                    lock(session).handle_transport_closed(now());
                }
                failure = Some(error);
            }
        }
        if let Some(summary) = closed {
            // The last batch held the close frame; the session asked to drop the transport.
            return finish(&feed, summary, failure);
        }
        if wrote && (more || woken || failure.is_some() || lock(session).queued_events() > 0) {
            // Busy writing (the batch was full, or the hub queued or commanded something
            // meanwhile): take what the peer already sent and fire due timers without waiting,
            // so a steady stream of events can starve neither the peer's pongs and close nor
            // the heartbeat; then drain again. When the session had nothing left and nothing
            // came, the wait below polls the peer and the timer anyway, and anything new
            // wakes it.
            take_ready_input(&mut transport, session, &mut transport_ended, &mut failure);
            let mut session = lock(session);
            let now = now();
            if session.poll_timeout().is_some_and(|due| due <= now) {
                session.handle_timeout(now);
            }
            continue;
        }

        // 3. Wait for the next input, holding no burst-sized batch while idle.
        if batch.capacity() > IDLE_BATCH_CAPACITY {
            batch = Vec::new();
        }
        if deadline != armed {
            if let Some(deadline) = deadline {
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(deadline));
            }
            armed = deadline;
        }
        tokio::select! {
            // Commands and events first, then timers, then the peer: a peer that keeps
            // sending cannot starve the heartbeat or the close grace.
            biased;
            () = notified.as_mut() => notified.set(feed.notified()),
            () = &mut timer, if armed.is_some() => {
                let now = now();
                if reads_before_timeout(&lock(session), now) {
                    // A pong (or, when closing, the peer's close) that is already here counts
                    // before its deadline is judged.
                    take_ready_input(&mut transport, session, &mut transport_ended, &mut failure);
                }
                lock(session).handle_timeout(now);
            }
            incoming = transport.next(), if !transport_ended => {
                take_input(incoming, session, &mut transport_ended, &mut failure);
            }
        }
    }
}

/// Whether what the peer sent must be read before `handle_timeout(now)`: when the pong
/// deadline is due, or while closing (the close grace). An ordinary ping tick does not need
/// it, which saves polling the transport once per ping.
fn reads_before_timeout(session: &ServerSession, now: Instant) -> bool {
    session.state() != SessionState::Open || session.pong_deadline().is_some_and(|due| due <= now)
}

/// A batch vector larger than this is freed when the connection goes idle (a burst must not
/// pin its memory on every connection it reached); the ping-and-pong trickle stays below.
const IDLE_BATCH_CAPACITY: usize = 16;

/// At most this many ready messages are taken from the peer at a time without waiting.
const READY_INPUTS: usize = 16;

/// Hands the session up to [`READY_INPUTS`] messages the transport has ready, without waiting.
fn take_ready_input<T, E>(
    transport: &mut T,
    session: &Mutex<ServerSession>,
    transport_ended: &mut bool,
    failure: &mut Option<Failure<E>>,
) where
    T: Stream<Item = Result<Incoming, E>> + Unpin,
    E: TransportError,
{
    for _ in 0..READY_INPUTS {
        if *transport_ended {
            return;
        }
        match transport.next().now_or_never() {
            Some(incoming) => take_input(incoming, session, transport_ended, failure),
            None => return,
        }
    }
}

/// Hands the session what the transport produced.
fn take_input<E: TransportError>(
    incoming: Option<Result<Incoming, E>>,
    session: &Mutex<ServerSession>,
    transport_ended: &mut bool,
    failure: &mut Option<Failure<E>>,
) {
    match incoming {
        Some(Ok(message)) => lock(session).handle_message(message, now()),
        Some(Err(error)) => {
            // The peer broke the WebSocket protocol or a size limit: the transport can still
            // write, so the session closes with the code it decides (1009/1002/1007) instead
            // of the connection dropping silently (the peer would only see 1006).
            if let Some(violation) = error.violation() {
                let mut session = lock(session);
                if session.state() == SessionState::Open {
                    session.handle_violation(violation, now());
                    return;
                }
            }
            *transport_ended = true;
            if failure.is_none() {
                *failure = Some(Failure::Transport(error));
            }
            lock(session).handle_transport_closed(now());
        }
        None => {
            *transport_ended = true;
            lock(session).handle_transport_closed(now());
        }
    }
}

/// What one drain produced besides the messages.
/// One batch in this many is measured by the per-batch histograms (`misar_queue_depth`,
/// `misar_publish_to_flush_seconds`). A fan-out's batches are often of one event, so measuring
/// each cost B3 a tenth of its throughput with a recorder installed (BENCHMARKS.md, issue 15).
const SAMPLE_EVERY: u32 = 16;

struct Drained {
    /// The session is over.
    closed: Option<CloseSummary>,
    /// When to call `handle_timeout` next.
    deadline: Option<Instant>,
    /// The batch filled up before the session ran out of outputs.
    more: bool,
    /// When the oldest event of the batch was queued by the hub (with the `metrics`
    /// feature; `None` otherwise).
    queued_since: Option<Instant>,
    /// Events were queued when the batch was taken (it counts for sampling).
    had_events: bool,
}

/// Moves up to `max_batch` messages out of the session (`DropTransport` needs no action: the
/// transport is dropped when the session reports `Closed`, right after).
fn drain(feed: &Feed, batch: &mut Vec<Message>, max_batch: usize, sample: bool) -> Drained {
    let mut session = lock(feed.session());
    let depth = session.queued_events();
    // Sampled batches only, never per enqueue: a histogram per event of a 1,000-way fan-out
    // cost a fifth of the server's CPU (BENCHMARKS.md, issue 15).
    if sample && depth > 0 {
        crate::metrics::record::queue_depth(depth);
    }
    // One allocation for the whole batch (control frames come on top of the queue, rarely).
    batch.reserve(depth.saturating_add(1).min(max_batch));
    let mut closed = None;
    let mut more = true;
    while batch.len() < max_batch {
        match session.poll_output() {
            Some(ServerOutput::Transmit(message)) => batch.push(message),
            Some(ServerOutput::Closed(summary)) => {
                closed = Some(summary);
                more = false;
                break;
            }
            Some(_) => {}
            None => {
                more = false;
                break;
            }
        }
    }
    #[cfg(feature = "metrics")]
    let queued_since = feed
        .conn()
        .take_queued_since(session.queued_events())
        .filter(|_| sample);
    #[cfg(not(feature = "metrics"))]
    let queued_since = {
        let _ = sample;
        None
    };
    Drained {
        closed,
        deadline: session.poll_timeout(),
        more,
        queued_since,
        had_events: depth > 0,
    }
}

/// Writes `batch` with one flush, within the write timeout; gives up at once if the hub
/// aborts the connection meanwhile.
///
/// The write timeout is armed only if the batch does not complete at its first attempt (the
/// socket is full). Most batches complete at once, and each arming costs two updates of the
/// timer wheel (setting the write deadline, then restoring the session's); `armed` is cleared
/// when the timer is taken over. `woken` is set when a wake-up from the hub was consumed
/// meanwhile, so the caller drains again before it waits.
#[allow(clippy::too_many_arguments)] // the driver's state, borrowed piecewise
async fn write_batch<'f, T, E>(
    transport: &mut T,
    batch: &mut Vec<Message>,
    feed: &'f Feed,
    mut notified: Pin<&mut Notified<'f>>,
    mut timer: Pin<&mut Sleep>,
    armed: &mut Option<Instant>,
    woken: &mut bool,
    config: &DriverConfig,
) -> Result<(), Failure<E>>
where
    T: Sink<Message, Error = E> + Unpin,
{
    let write = async {
        for message in batch.drain(..) {
            transport.feed(message).await?;
        }
        transport.flush().await
    };
    tokio::pin!(write);
    if let Poll::Ready(result) =
        std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await
    {
        return result.map_err(Failure::Transport);
    }
    *armed = None;
    match tokio::time::Instant::now().checked_add(config.write_timeout) {
        Some(deadline) => timer.as_mut().reset(deadline),
        // A timeout too large to represent never expires: park the timer a year away.
        None => timer
            .as_mut()
            .reset(tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600)),
    }
    loop {
        tokio::select! {
            biased;
            result = &mut write => return result.map_err(Failure::Transport),
            () = timer.as_mut() => return Err(Failure::WriteTimeout),
            // Wake-ups while writing only matter for an abort: events and commands are
            // already in the session, and the caller drains after the write.
            () = notified.as_mut() => {
                notified.set(feed.notified());
                *woken = true;
                if feed.is_aborted() {
                    return Err(Failure::Aborted);
                }
            }
        }
    }
}

/// The connection's end: recorded in the metrics (close code and who closed, write timeouts,
/// coalesced `progress`), then reported.
fn finish<E: TransportError>(
    feed: &Feed,
    summary: CloseSummary,
    failure: Option<Failure<E>>,
) -> ConnectionEnd {
    let write_timed_out = matches!(failure, Some(Failure::WriteTimeout));
    crate::metrics::record::closed(&summary, write_timed_out);
    if write_timed_out {
        crate::metrics::record::write_timeout();
    }
    #[cfg(feature = "metrics")]
    crate::metrics::record::coalesced(lock(feed.session()).progress_coalesced());
    #[cfg(not(feature = "metrics"))]
    let _ = feed;
    match failure {
        None => ConnectionEnd::Closed(summary),
        Some(Failure::WriteTimeout) => ConnectionEnd::WriteTimeout(summary),
        Some(Failure::Aborted) => ConnectionEnd::Aborted(summary),
        Some(Failure::Transport(error)) => ConnectionEnd::TransportError {
            summary,
            error: Box::new(error),
        },
    }
}
