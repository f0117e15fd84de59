//! The builder, the router it makes, and the handler that runs the handshake before the
//! upgrade.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::Response;
use axum::routing::any;
use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_TYPE, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;
use misar_proto::config::ConfigError;
use misar_proto::handshake::{
    self, Accepted, HandshakeConfig, RejectAction, Rejected, RejectionStyle, Step,
};
use misar_proto::route::{Channel, Routes};
use misar_proto::server::ServerConfig;
use misar_proto_tokio::hub::{Hub, RevocationMark, SubscribeError};
use misar_proto_tokio::server::{ConnectionEnd, DriverConfig, serve_connection};
use tracing::Instrument;

use crate::authorizer::Authorizer;
use crate::bounds::{
    DEFAULT_HOOK_TIMEOUT, DEFAULT_MAX_PENDING_HANDSHAKES, HookBounds, PENDING_RETRY_AFTER_SECS,
};
use crate::buffers::WsBuffers;
use crate::metrics::outcome;
use crate::observer::{ConnectionInfo, ConnectionObserver, Observer, channel_kind};
use crate::reject::close_after_upgrade;
use crate::shutdown::ShutdownHandle;
use crate::upgrade::Upgrade;
use misar_proto_tokio::metrics::handshake as record_handshake;

/// Builds a [`MisarWs`]: the hub to fan out through, the hooks, and the settings.
///
/// Every setting has the default of `DESIGN.md` §2: prefix `/mail/ws`, HTTP 403 rejections,
/// no `Origin` allowlist, pings every 30 s with a 30 s pong timeout, the client-message limits
/// of [`ServerConfig::default`], the small buffers of [`WsBuffers::default`], the connection
/// limits of the hub's own configuration, and §2.14's bounds on the hooks: a 5 s
/// `hook_timeout` and at most 1,024 pending handshakes. (The bounds on the request head are
/// the listener's: see [`serve`](crate::serve()).)
#[derive(Debug)]
#[must_use = "call .build() to get the router"]
pub struct MisarWsBuilder<A> {
    hub: Hub,
    authorizer: A,
    handshake: HandshakeConfig,
    server: ServerConfig,
    driver: DriverConfig,
    buffers: WsBuffers,
    shutdown_grace: Option<Duration>,
    hook_timeout: Duration,
    max_pending_handshakes: usize,
    observer: Observer,
}

/// The WebSocket endpoints, ready to mount: a [`Router`] and the [`ShutdownHandle`] of its
/// connections.
#[derive(Debug, Clone)]
pub struct MisarWs {
    router: Router,
    shutdown: ShutdownHandle,
}

impl MisarWs {
    /// Starts a builder over `hub`, asking `authorizer` about keys and campaigns.
    pub fn builder<A: Authorizer>(hub: Hub, authorizer: A) -> MisarWsBuilder<A> {
        MisarWsBuilder {
            hub,
            authorizer,
            handshake: HandshakeConfig::default(),
            server: ServerConfig::default(),
            driver: DriverConfig::default(),
            buffers: WsBuffers::default(),
            shutdown_grace: None,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            observer: Observer::default(),
        }
    }

    /// The router serving `{prefix}/inbox` and `{prefix}/campaigns/{id}` (and answering
    /// anything else under the prefix with the protocol's 404), to `merge` into an app, or to
    /// `nest` under a path (the prefix then counts from there). With an empty prefix it serves
    /// `/` and everything under it that the app's own routes do not match.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The handle that shuts the router's connections down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Both parts.
    pub fn into_parts(self) -> (Router, ShutdownHandle) {
        (self.router, self.shutdown)
    }
}

impl<A: Authorizer> MisarWsBuilder<A> {
    /// Mounts the channels under `prefix` (default `/mail/ws`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.handshake.routes = Routes::new(prefix);
        self
    }

    /// How unauthenticated and unauthorized requests are refused (default
    /// [`RejectionStyle::Http`]: 403 before the upgrade).
    pub fn rejection_style(mut self, style: RejectionStyle) -> Self {
        self.handshake.rejection_style = style;
        self
    }

    /// Accepts browser requests only from these origins (403 otherwise).
    pub fn allowed_origins<I>(mut self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.handshake = self.handshake.with_allowed_origins(origins);
        self
    }

    /// Replaces the whole handshake configuration (prefix, style, origins).
    pub fn handshake_config(mut self, config: HandshakeConfig) -> Self {
        self.handshake = config;
        self
    }

    /// Replaces the sessions' configuration (heartbeat, queue bounds, client-message limits).
    pub fn server_config(mut self, config: ServerConfig) -> Self {
        self.server = config;
        self
    }

    /// Sends a ping every `interval` (default 30 s).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.server.ping_interval = interval;
        self
    }

    /// Closes with 1001 a connection that does not answer a ping within `timeout` (default
    /// 30 s).
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.server.pong_timeout = timeout;
        self
    }

    /// Settings of the connection driver (write timeout, batch size).
    pub fn driver_config(mut self, config: DriverConfig) -> Self {
        self.driver = config;
        self
    }

    /// WebSocket buffer sizes and inbound size limits (default [`WsBuffers::default`]).
    pub fn websocket_buffers(mut self, buffers: WsBuffers) -> Self {
        self.buffers = buffers;
        self
    }

    /// How long a shutdown waits for close handshakes (default: the hub's
    /// `shutdown_grace`).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = Some(grace);
        self
    }

    /// How long one hook call may take (default 5 s, §2.14): a hook that has not answered by
    /// then counts as failed, and the request gets 503, never an upgrade.
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.hook_timeout = timeout;
        self
    }

    /// How many requests may wait on the hooks at once (default 1,024, at least 1, §2.14).
    /// More get 503 with `Retry-After: 1` at once, without a hook call.
    pub fn max_pending_handshakes(mut self, max: usize) -> Self {
        self.max_pending_handshakes = max;
        self
    }

    /// Tells `observer` about every connection the router serves: when it opens (after the
    /// upgrade) and when it ends (the core's `CloseSummary` and the time served). Its methods
    /// run inline on the connection's task, outside every lock: they must be quick (see
    /// [`ConnectionObserver`]). Default: none.
    pub fn observer(mut self, observer: impl ConnectionObserver) -> Self {
        self.observer = Observer(Some(Arc::new(observer)));
        self
    }

    /// The router and its shutdown handle, after checking the sessions' configuration with
    /// [`ServerConfig::validate`] (a zero pong timeout, close grace, queue bound or message
    /// burst, a zero refill period, a ping interval below 1 ms).
    ///
    /// ```
    /// use std::time::Duration;
    /// use misar_proto_axum::{MemoryAuthorizer, MisarWs};
    /// use misar_proto_tokio::hub::{Hub, HubConfig};
    ///
    /// let hub = Hub::new(HubConfig::default());
    /// let error = MisarWs::builder(hub, MemoryAuthorizer::new())
    ///     .pong_timeout(Duration::ZERO)
    ///     .try_build()
    ///     .unwrap_err();
    /// assert_eq!(error.field, "pong_timeout");
    /// ```
    pub fn try_build(self) -> Result<MisarWs, ConfigError> {
        self.server.validate()?;
        Ok(self.assemble())
    }

    /// The router and its shutdown handle.
    ///
    /// Infallible: a [`ServerConfig`] that [`ServerConfig::validate`] refuses is used anyway
    /// (each session clamps the ping interval and the refill period, and the other refused
    /// values have the effects `validate` documents), with a warning logged here. Use
    /// [`try_build`](Self::try_build) to refuse it instead.
    pub fn build(self) -> MisarWs {
        if let Err(error) = self.server.validate() {
            tracing::warn!(%error, "misar-proto-axum: serving with an invalid server configuration");
        }
        self.assemble()
    }

    fn assemble(self) -> MisarWs {
        let grace = self
            .shutdown_grace
            .unwrap_or(self.hub.config().shutdown_grace);
        let shutdown = ShutdownHandle::new(self.hub.clone(), grace);
        let prefix = self.handshake.routes.prefix().to_owned();
        let inner = Arc::new(Inner {
            hub: self.hub,
            authorizer: self.authorizer,
            handshake: self.handshake,
            server: self.server,
            driver: self.driver,
            buffers: self.buffers,
            shutdown: shutdown.clone(),
            bounds: HookBounds::new(self.hook_timeout, self.max_pending_handshakes),
            observer: self.observer,
        });
        // One handler for everything under the prefix: the core decides 404s, so they look
        // like the protocol's (JSON, `no-store`) rather than axum's.
        let mut router = Router::new()
            .route(&format!("{prefix}/{{*rest}}"), any(handle::<A>))
            // An empty wildcard does not match: `{prefix}/` needs its own route.
            .route(&format!("{prefix}/"), any(handle::<A>));
        if !prefix.is_empty() {
            router = router.route(&prefix, any(handle::<A>));
        }
        MisarWs {
            router: router.with_state(inner),
            shutdown,
        }
    }
}

/// Everything a request needs, shared by all of them.
#[derive(Debug)]
struct Inner<A> {
    hub: Hub,
    authorizer: A,
    handshake: HandshakeConfig,
    server: ServerConfig,
    driver: DriverConfig,
    buffers: WsBuffers,
    shutdown: ShutdownHandle,
    bounds: HookBounds,
    observer: Observer,
}

async fn handle<A: Authorizer>(State(inner): State<Arc<Inner<A>>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    // Already done by `serve`; again here for apps served by `axum::serve`.
    crate::serve::mark_credentials_sensitive(&mut parts.headers);
    // The path only: the query may carry `token=<key>`, which must never reach a log.
    let span = tracing::info_span!("misar_ws", path = %parts.uri.path());
    async move {
        // Taken first, but only used after the handshake accepted: a request that is not an
        // upgrade still gets the protocol's 404/403, not axum's 400/426. axum's extractor
        // validates the handshake and takes hyper's pending upgrade; we keep a clone of it and
        // serve the socket ourselves (see `upgrade.rs`).
        let on_upgrade = parts.extensions.get::<OnUpgrade>().cloned();
        let key = parts.headers.get(SEC_WEBSOCKET_KEY).cloned();
        // axum's extractor copies every offered subprotocol into a new header value, not
        // marked sensitive, and its `Debug` prints them: it never sees them (§2.12).
        let protocols = crate::serve::take_protocols(&mut parts.headers);
        let validated = WebSocketUpgrade::from_request_parts(&mut parts, &()).await;
        crate::serve::restore_protocols(&mut parts.headers, protocols);
        let upgrade = match (validated, on_upgrade) {
            (Ok(_validated), Some(on_upgrade)) => Ok(Upgrade::new(on_upgrade, key)),
            _ => Err(()),
        };
        // Before the hooks: a revocation while they run is not lost (§2.13).
        let mark = inner.hub.mark();
        let decision = decide(&inner, &parts).await;
        drop(parts);
        match decision {
            Ok(accepted) => match upgrade {
                Ok(upgrade) => {
                    // `misar.v1` when offered (§2.12), never the bearer entry.
                    let upgrade = upgrade.echo(accepted.subprotocol());
                    serve(inner, accepted, mark, upgrade).await
                }
                Err(_) => {
                    tracing::debug!("authorized, but not a WebSocket upgrade: 426");
                    // A malformed WebSocket handshake, as far as the metrics go.
                    record_handshake("bad_request");
                    upgrade_required()
                }
            },
            Err((rejected, outcome)) => refuse(inner, rejected, outcome, upgrade.ok()),
        }
    }
    .instrument(span)
    .await
}

/// Runs the core's handshake, awaiting the hooks between its steps, each under
/// `hook_timeout`, the whole wait in one of the `max_pending_handshakes` places (§2.14).
/// A refusal comes with its `outcome` label (a hook that timed out is `timed_out`, though the
/// core knows it only as a failed hook).
async fn decide<A: Authorizer>(
    inner: &Inner<A>,
    parts: &http::request::Parts,
) -> Result<Accepted, (Rejected, &'static str)> {
    let mut timed_out = false;
    let mut step = handshake::start(&inner.handshake, parts);
    // Taken before the first hook call, held until the decision.
    let mut place = None;
    loop {
        step = match step {
            Step::NeedsAuthentication(question) => {
                if place.is_none() {
                    place = inner.bounds.try_enter();
                    if place.is_none() {
                        tracing::info!(
                            pending = inner.bounds.pending(),
                            "refused: too many pending handshakes"
                        );
                        return Err((
                            Rejected::too_many_pending_handshakes(PENDING_RETRY_AFTER_SECS),
                            "overloaded",
                        ));
                    }
                }
                match inner
                    .bounds
                    .call(inner.authorizer.authenticate(question.key()))
                    .await
                {
                    Ok(Ok(Some(account))) => question.authenticated(account),
                    Ok(Ok(None)) => Step::Rejected(question.unknown_key()),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "key check failed: refusing with 503");
                        Step::Rejected(question.hook_failed())
                    }
                    Err(_timed_out) => {
                        tracing::warn!("key check timed out: refusing with 503");
                        timed_out = true;
                        Step::Rejected(question.hook_failed())
                    }
                }
            }
            Step::NeedsOwnership(question) => {
                match inner
                    .bounds
                    .call(
                        inner
                            .authorizer
                            .owns_campaign(question.account(), question.campaign()),
                    )
                    .await
                {
                    Ok(Ok(true)) => Step::Accepted(question.grant()),
                    Ok(Ok(false)) => Step::Rejected(question.deny()),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "ownership check failed: refusing with 503");
                        Step::Rejected(question.hook_failed())
                    }
                    Err(_timed_out) => {
                        tracing::warn!("ownership check timed out: refusing with 503");
                        timed_out = true;
                        Step::Rejected(question.hook_failed())
                    }
                }
            }
            Step::Accepted(accepted) => return Ok(accepted),
            Step::Rejected(rejected) => {
                let outcome = if timed_out {
                    "timed_out"
                } else {
                    outcome(&rejected)
                };
                return Err((rejected, outcome));
            }
        }
    }
}

/// Delivers a rejection: a response (no upgrade, no task), or an upgrade whose only message
/// is the close code.
fn refuse<A: Authorizer>(
    inner: Arc<Inner<A>>,
    rejected: Rejected,
    outcome: &'static str,
    upgrade: Option<Upgrade>,
) -> Response {
    let status = rejected.status().as_u16();
    let reason = rejected.reason().to_string();
    let Some(upgrade) = upgrade else {
        // Not a WebSocket request: nothing to upgrade, so the HTTP form whatever the style.
        record_handshake(outcome);
        tracing::info!(status, %reason, "refused");
        return http_response(rejected.into_response());
    };
    // A close-after-upgrade rejection holds a socket for up to the close grace without taking
    // a hub slot; past the hub's total limit such clients get the HTTP form instead, so
    // unauthenticated upgrades cannot pile up.
    if inner.shutdown.active_connections() >= inner.hub.config().max_connections {
        record_handshake(outcome);
        tracing::info!(status, %reason, "refused over HTTP: at the connection limit");
        return http_response(rejected.into_response());
    }
    match rejected.action() {
        RejectAction::Respond(response) => {
            record_handshake(outcome);
            tracing::info!(status, %reason, "refused before the upgrade");
            http_response(response)
        }
        RejectAction::UpgradeThenClose(close) => {
            if inner.shutdown.is_shutting_down() {
                // A 503 instead of the close: that is what the client gets.
                record_handshake("overloaded");
                return shutting_down(&inner.hub);
            }
            record_handshake(outcome);
            tracing::info!(code = close.code().as_u16(), %reason, "refused: upgrading to close");
            let guard = inner.shutdown.enter();
            let config = inner.server.clone();
            let write_timeout = inner.driver.write_timeout;
            let shutdown = inner.shutdown.clone();
            // `misar.v1` when offered, so a browser accepts the 101 and sees the close code.
            let upgrade = upgrade.echo(close.subprotocol());
            upgrade.respond(inner.buffers, move |socket| async move {
                let _guard = guard;
                close_after_upgrade(socket, close, config, write_timeout, shutdown).await;
            })
        }
        // A delivery this version does not know: refuse plainly rather than guess.
        _ => {
            record_handshake(outcome);
            tracing::warn!(status, %reason, "refused (unknown rejection delivery)");
            plain_error(
                StatusCode::FORBIDDEN,
                r#"{"error":"forbidden","closeCode":4403}"#,
            )
        }
    }
}

/// Takes a connection slot in the hub (which creates the session), waits until the broker
/// promises every event published from now on ([`Feed::ready`](misar_proto_tokio::hub::Feed::ready):
/// at once in memory, the stream's subscription confirmed with Redis), and upgrades; a broker
/// that cannot promise it gets the client a 503 with `Retry-After`.
async fn serve<A: Authorizer>(
    inner: Arc<Inner<A>>,
    accepted: Accepted,
    mark: RevocationMark,
    upgrade: Upgrade,
) -> Response {
    if inner.shutdown.is_shutting_down() {
        record_handshake("overloaded");
        return shutting_down(&inner.hub);
    }
    let account = accepted.account().clone();
    let channel = match accepted.channel() {
        Channel::Inbox => "inbox".to_owned(),
        Channel::Campaign(id) => format!("campaign {id}"),
        _ => "?".to_owned(),
    };
    let auth = accepted.credential_source();
    let info = ConnectionInfo {
        account: account.clone(),
        channel: accepted.channel().clone(),
        credential_source: auth,
    };
    let feed = match inner.hub.subscribe(accepted, mark, &inner.server) {
        Ok(feed) => feed,
        Err(error) => {
            let rejected = match &error {
                SubscribeError::TooManyForAccount { .. } => {
                    record_handshake("too_many_for_account");
                    Rejected::too_many_for_account()
                }
                other => Rejected::too_many_connections(retry_after_secs(
                    other
                        .retry_after()
                        .unwrap_or(inner.hub.config().retry_after),
                )),
            };
            if !matches!(error, SubscribeError::TooManyForAccount { .. }) {
                record_handshake("overloaded");
            }
            tracing::info!(
                %account,
                status = rejected.status().as_u16(),
                %error,
                "refused by the hub"
            );
            return http_response(rejected.into_response());
        }
    };
    if let Err(error) = feed.ready().await {
        // Nothing published after a 101 could be promised: the client comes back.
        record_handshake("overloaded");
        tracing::warn!(%account, %error, "refused: the broker's subscription is not confirmed");
        drop(feed);
        let rejected =
            Rejected::too_many_connections(retry_after_secs(inner.hub.config().retry_after));
        return http_response(rejected.into_response());
    }
    tracing::info!(%account, %channel, ?auth, "upgrading");
    record_handshake("accepted");
    let guard = inner.shutdown.enter();
    let driver = inner.driver.clone();
    let observer = inner.observer.clone();
    // One span per connection: the account and the channel's kind, never the key (nor the
    // campaign id, which the request's `misar_ws` span already has in its path).
    let span = tracing::info_span!(
        "misar_connection",
        account = %account,
        channel = channel_kind(&info.channel)
    );
    upgrade.respond(inner.buffers, move |socket| {
        async move {
            let _guard = guard;
            let started = tokio::time::Instant::now();
            if let Some(observer) = &observer.0 {
                observer.opened(&info);
            }
            let end = serve_connection(socket, feed, driver).await;
            log_end(&end);
            if let Some(observer) = &observer.0 {
                observer.closed(&info, end.summary(), started.elapsed());
            }
        }
        .instrument(span)
    })
}

fn log_end(end: &ConnectionEnd) {
    match end {
        ConnectionEnd::Closed(summary) => tracing::info!(
            cause = ?summary.cause,
            code = summary.sent_code.map(|c| c.as_u16()),
            ending = ?summary.ending,
            events = summary.events_sent,
            "connection closed"
        ),
        ConnectionEnd::WriteTimeout(summary) => tracing::info!(
            cause = ?summary.cause,
            events = summary.events_sent,
            "connection dropped: write timeout"
        ),
        ConnectionEnd::TransportError { summary, error } => tracing::info!(
            cause = ?summary.cause,
            events = summary.events_sent,
            %error,
            "connection dropped: transport error"
        ),
        ConnectionEnd::Aborted(summary) => tracing::info!(
            cause = ?summary.cause,
            events = summary.events_sent,
            "connection dropped: shutdown grace over"
        ),
        other => tracing::info!(?other, "connection ended"),
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_secs(retry_after: Duration) -> u32 {
    let secs = retry_after
        .as_secs()
        .saturating_add(u64::from(retry_after.subsec_nanos() > 0));
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

fn shutting_down(hub: &Hub) -> Response {
    tracing::info!("refused: shutting down");
    http_response(
        Rejected::too_many_connections(retry_after_secs(hub.config().retry_after)).into_response(),
    )
}

fn http_response(response: http::Response<Bytes>) -> Response {
    response.map(Body::from)
}

fn plain_error(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// 426 for an authorized request that is not a WebSocket handshake (RFC 6455 §4.2.2).
fn upgrade_required() -> Response {
    let mut response = plain_error(
        StatusCode::UPGRADE_REQUIRED,
        r#"{"error":"upgrade_required","message":"this endpoint serves WebSocket upgrades only"}"#,
    );
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(5)), 5);
        assert_eq!(retry_after_secs(Duration::MAX), u32::MAX);
    }

    #[tokio::test]
    async fn try_build_refuses_an_invalid_server_config_and_build_does_not() {
        use misar_proto::config::ConfigProblem;
        use misar_proto_tokio::hub::HubConfig;

        use crate::MemoryAuthorizer;

        let builder = || MisarWs::builder(Hub::new(HubConfig::default()), MemoryAuthorizer::new());
        assert!(builder().try_build().is_ok());
        let error = builder()
            .server_config(ServerConfig {
                max_queued_events: 0,
                ..ServerConfig::default()
            })
            .try_build()
            .unwrap_err();
        assert_eq!(
            (error.field, error.problem),
            ("max_queued_events", ConfigProblem::Zero)
        );
        let error = builder()
            .ping_interval(Duration::ZERO)
            .try_build()
            .unwrap_err();
        assert_eq!(error.field, "ping_interval");
        // `build` serves it anyway (documented), so existing code keeps working.
        let _ = builder().pong_timeout(Duration::ZERO).build();
    }
}
