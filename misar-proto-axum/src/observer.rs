//! Lifecycle hooks for embedders: [`ConnectionObserver`], set with
//! [`MisarWsBuilder::observer`](crate::MisarWsBuilder::observer).

use std::sync::Arc;
use std::time::Duration;

use misar_proto::auth::{AccountId, CredentialSource};
use misar_proto::route::Channel;
use misar_proto::server::CloseSummary;

/// Who a served connection is: its account, its channel, and where its credentials came
/// from. Never the key (its `Debug` prints nothing secret).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The account the key belongs to.
    pub account: AccountId,
    /// The channel served (`Inbox`, or `Campaign` with its id).
    pub channel: Channel,
    /// Where the credentials were found (header, query, subprotocol), not what they were.
    pub credential_source: CredentialSource,
}

impl ConnectionInfo {
    /// The channel's kind: `"inbox"` or `"campaign"`.
    pub fn channel_kind(&self) -> &'static str {
        channel_kind(&self.channel)
    }
}

pub(crate) fn channel_kind(channel: &Channel) -> &'static str {
    match channel {
        Channel::Inbox => "inbox",
        _ => "campaign",
    }
}

/// Called when a connection opens (after the upgrade) and when it ends, e.g. for audit,
/// billing or an embedder's own metrics.
///
/// Both methods run **inline, on the connection's task**, outside every lock of the router
/// and the hub: they must be quick and must not block. For slow work (a database write, a
/// remote call), send what you need into a channel and do it on another task. A panic in a
/// method is the embedder's bug and ends that connection's task.
///
/// `opened` is called once the WebSocket is up (refused handshakes never open), `closed` once
/// for every `opened`, with the core's [`CloseSummary`] (the cause, the close codes, events
/// sent) and how long the connection was served.
///
/// ```
/// use std::time::Duration;
/// use misar_proto::server::CloseSummary;
/// use misar_proto_axum::{ConnectionInfo, ConnectionObserver};
///
/// struct Audit(tokio::sync::mpsc::UnboundedSender<String>);
///
/// impl ConnectionObserver for Audit {
///     fn closed(&self, info: &ConnectionInfo, summary: &CloseSummary, served: Duration) {
///         // Never blocks: the audit log is written by another task.
///         let _ = self.0.send(format!(
///             "{} {} {:?} after {served:?}, {} events",
///             info.account, info.channel_kind(), summary.sent_code, summary.events_sent
///         ));
///     }
/// }
/// ```
pub trait ConnectionObserver: Send + Sync + 'static {
    /// The connection was upgraded and is being served.
    fn opened(&self, info: &ConnectionInfo) {
        let _ = info;
    }

    /// The connection ended after being served for `served`.
    fn closed(&self, info: &ConnectionInfo, summary: &CloseSummary, served: Duration) {
        let _ = (info, summary, served);
    }
}

/// The builder's optional observer (its `Debug` says only whether there is one).
#[derive(Clone, Default)]
pub(crate) struct Observer(pub(crate) Option<Arc<dyn ConnectionObserver>>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}
