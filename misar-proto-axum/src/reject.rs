//! The driver of a `CloseAfterUpgrade` rejection: a session that sends 4401/4403 and ends.
//!
//! Such a session has no feed (it never subscribes, so it takes no slot of the connection
//! limits); this loop drives it with the same drain rule as `serve_connection`.

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use misar_proto::handshake::CloseAfterUpgrade;
use misar_proto::message::{Incoming, Message};
use misar_proto::server::{ServerConfig, ServerOutput, ServerSession};
use tokio::time::Instant;

use crate::shutdown::ShutdownHandle;

/// Sends the rejection's close code, waits (bounded by `close_grace`) for the peer's close,
/// and drops the socket. Ends early when the shutdown's grace runs out.
pub(crate) async fn close_after_upgrade<T, E>(
    mut transport: T,
    reject: CloseAfterUpgrade,
    config: ServerConfig,
    write_timeout: Duration,
    shutdown: ShutdownHandle,
) where
    T: Stream<Item = Result<Incoming, E>> + Sink<Message, Error = E> + Unpin,
{
    let mut session = ServerSession::rejected(reject, config, Instant::now().into_std());
    let stopped = shutdown.stopped();
    tokio::pin!(stopped);
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                ServerOutput::Transmit(message) => {
                    let sent = tokio::time::timeout(write_timeout, transport.send(message)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        session.handle_transport_closed(Instant::now().into_std());
                    }
                }
                // Dropping the transport at the end of this function closes the socket.
                ServerOutput::DropTransport => {}
                ServerOutput::Closed(summary) => {
                    tracing::debug!(
                        code = ?summary.sent_code,
                        ending = ?summary.ending,
                        "rejected connection closed"
                    );
                    return;
                }
                _ => {}
            }
        }
        let deadline = session.poll_timeout().map(Instant::from_std);
        let timer = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = transport.next() => match message {
                Some(Ok(message)) => session.handle_message(message, Instant::now().into_std()),
                Some(Err(_)) | None => session.handle_transport_closed(Instant::now().into_std()),
            },
            () = timer => session.handle_timeout(Instant::now().into_std()),
            () = &mut stopped => {
                tracing::debug!("shutdown grace over: dropping a rejected connection");
                return;
            }
        }
    }
}
