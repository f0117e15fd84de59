//! `tail`: follow a MisarMail WebSocket channel and print its events.
//!
//! ```text
//! cargo run -p misar-proto-tokio --example tail -- --url <ws-url> --key <key>
//!     [--auth header|query|subprotocol] [--query-token] [--json] [--no-resume]
//! ```
//!
//! - `--url` names the channel: `ws://127.0.0.1:8080/mail/ws/inbox` or
//!   `wss://api.misar.io/mail/ws/campaigns/<id>` (whatever precedes `/inbox` or
//!   `/campaigns/<id>` is the server's mount prefix).
//! - The key goes in `Authorization: Bearer <key>` (`--auth header`, the default), in
//!   `?token=<key>` (`--auth query`, or its older spelling `--query-token`), or in
//!   `Sec-WebSocket-Protocol: misar.v1, misar.bearer.<key>` (`--auth subprotocol`, as
//!   browsers do). It is never printed, nor logged at any level.
//! - `--json`: one compact JSON object per event per line on stdout, as the server sent it
//!   (unknown event types too; only insignificant whitespace is removed). Without it:
//!   readable lines, and a campaign's progress as a live progress bar when stdout is a
//!   terminal.
//! - Connection news (connected, lost, reconnecting in …) goes to stderr; a wait the server
//!   asked for with `Retry-After` (429, 503) is shown as such.
//! - Missed events (§2.11): tail resumes by default — each reconnect asks for what was
//!   published while it was down (`Misar-Resume`), and the server replays it before live
//!   events. When it cannot (`recovered: false`: the server restarted, or the gap outgrew its
//!   history), a line containing `not recovered` goes to stderr, and events go on live.
//!   `--no-resume` sends no resume value (what was published between connections is lost,
//!   silently). With `--json` the opted-in events carry their `"offset"`, as sent.
//!
//! Exit status: 0 after a campaign's terminal event or on Ctrl-C (which closes with 1000); a
//! close 1000 before the terminal event is no finish: tail reconnects, as the client does;
//! 2 for bad arguments and when the server refuses for good (HTTP 403, close 4401 or 4403,
//! another final refusal); 1 when stdout cannot be written.
//!
//! Logging: set `RUST_LOG` (e.g. `RUST_LOG=misar_proto_tokio=debug`) for the client's own
//! logs on stderr.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use misar_proto::auth::ApiKey;
use misar_proto::client::AuthStyle;
use misar_proto::close::{CloseCode, Disconnect, Fatal};
use misar_proto::event::{CampaignEvent, Event, InboxEvent, Progress};
use misar_proto::route::{Channel, Routes};
use misar_proto_tokio::client::{Client, SubscriptionError, Update, Updates};

/// Follow a MisarMail WebSocket channel and print its events.
#[derive(Parser)]
#[command(name = "tail")]
struct Args {
    /// The channel's WebSocket URL, e.g. ws://127.0.0.1:8080/mail/ws/inbox or
    /// wss://api.misar.io/mail/ws/campaigns/<id>.
    #[arg(long, value_name = "WS_URL")]
    url: String,
    /// The API key (msk_…). Sent as `Authorization: Bearer <key>` unless --auth says otherwise.
    /// May come from the MISAR_KEY environment variable instead, which keeps it out of `ps`.
    #[arg(long, value_name = "KEY", env = "MISAR_KEY", hide_env_values = true)]
    key: String,
    /// Where the key goes: `header` (Authorization: Bearer), `query` (?token=), or
    /// `subprotocol` (Sec-WebSocket-Protocol: misar.v1, misar.bearer.<key>).
    #[arg(long, value_enum, value_name = "PLACE", conflicts_with = "query_token")]
    auth: Option<AuthPlace>,
    /// The same as `--auth query`: the key in the `token` query parameter.
    #[arg(long)]
    query_token: bool,
    /// Print every event as one compact JSON object per line.
    #[arg(long)]
    json: bool,
    /// Do not resume after a reconnect (§2.11): events published while disconnected are lost.
    #[arg(long)]
    no_resume: bool,
}

/// Where the key goes (`--auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AuthPlace {
    Header,
    Query,
    Subprotocol,
}

impl Args {
    fn auth_style(&self) -> AuthStyle {
        match (self.auth, self.query_token) {
            (Some(AuthPlace::Query), _) | (None, true) => AuthStyle::Query,
            (Some(AuthPlace::Subprotocol), _) => AuthStyle::Subprotocol,
            (Some(AuthPlace::Header), _) | (None, false) => AuthStyle::Header,
        }
    }
}

/// Exit status for bad arguments and final refusals.
const EXIT_REFUSED: u8 = 2;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2.
    let args = Args::parse();
    init_logging();

    let target = match Target::parse(&args.url) {
        Ok(target) => target,
        Err(message) => return refuse(&format!("invalid --url: {message}")),
    };
    // The key's syntax errors never contain the key.
    let key = match ApiKey::parse(&args.key) {
        Ok(key) => key,
        Err(error) => return refuse(&format!("invalid --key: {error}")),
    };
    let auth = args.auth_style();
    let client = match Client::builder(target.base.clone(), key)
        .auth(auth)
        .resume(!args.no_resume)
        .build()
    {
        Ok(client) => client,
        Err(error) => return refuse(&format!("invalid --url: {error}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            note(&format!("cannot start the async runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    let updates = client.subscribe(target.channel.clone()).updates();
    runtime.block_on(run(updates, &target, args.json))
}

/// The channel, the base URL for the client, and the URL as shown (without its query, which
/// could hold anything).
struct Target {
    base: String,
    channel: Channel,
    shown: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| "not a valid URL (expected ws://host[:port]/…/inbox)".to_owned())?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => "ws",
            Some(s) if s.eq_ignore_ascii_case("wss") => "wss",
            _ => return Err("the scheme must be ws:// or wss://".to_owned()),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| "the URL has no host".to_owned())?;
        let path = uri.path();
        // The channel is the last segment(s); everything before is the mount prefix.
        let prefix = if let Some(prefix) = path.strip_suffix("/inbox") {
            prefix
        } else if let Some(at) = path.rfind("/campaigns/") {
            path.get(..at).unwrap_or_default()
        } else {
            return Err("the path must end with /inbox or /campaigns/<id>".to_owned());
        };
        let channel = Routes::new(prefix)
            .resolve(path)
            .map_err(|error| format!("the path does not name a channel: {error}"))?;
        let mut base = format!("{scheme}://{authority}{prefix}");
        if let Some(query) = uri.query() {
            base.push('?');
            base.push_str(query);
        }
        Ok(Self {
            base,
            channel,
            shown: format!("{scheme}://{authority}{path}"),
        })
    }
}

async fn run(mut updates: Updates, target: &Target, json: bool) -> ExitCode {
    let mut out = Output::new(json);
    let mut interrupt = std::pin::pin!(async {
        // Without a handler (it could not be installed) Ctrl-C keeps its default effect.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    let mut connections = 0u64;
    // Whether the hint about a failed connection's reason was given.
    let mut hinted = false;
    loop {
        let update = tokio::select! {
            biased;
            () = &mut interrupt => {
                out.note("interrupted; closing");
                updates.close().await;
                out.finish();
                return ExitCode::SUCCESS;
            }
            update = updates.next() => update,
        };
        match update {
            None => {
                out.finish();
                return ExitCode::SUCCESS;
            }
            Some(Ok(Update::Connected)) => {
                let verb = if connections == 0 {
                    "connected to"
                } else {
                    "reconnected to"
                };
                connections = connections.saturating_add(1);
                out.note(&format!("{verb} {}", target.shown));
            }
            Some(Ok(Update::Reconnecting {
                cause,
                after,
                attempt,
                retry_after,
            })) => {
                let hint = if cause == Disconnect::ConnectFailed && !hinted {
                    hinted = true;
                    " (RUST_LOG=misar_proto_tokio=debug shows why)"
                } else {
                    ""
                };
                let wait = match retry_after {
                    Some(asked) if asked > after => format!(
                        "reconnecting in {} (the server's Retry-After of {}, capped)",
                        seconds(after),
                        seconds(asked)
                    ),
                    Some(_) => format!(
                        "reconnecting in {} (the server's Retry-After)",
                        seconds(after)
                    ),
                    None => format!("reconnecting in {}", seconds(after)),
                };
                out.note(&format!(
                    "{}{hint}; {wait} (attempt {attempt})",
                    describe_disconnect(&cause),
                ));
            }
            Some(Ok(Update::Resumed { position })) => {
                if connections > 1 {
                    out.note(&format!("resumed from {position}: nothing missed"));
                }
            }
            Some(Ok(Update::NotRecovered { position })) => {
                let now = match position {
                    Some(position) => format!("the stream is now at {position}"),
                    None => "the server did not answer the resume request".to_owned(),
                };
                out.note(&format!(
                    "not recovered: events published while disconnected may have been missed ({now})"
                ));
            }
            Some(Ok(Update::Invalid { error, .. })) => {
                out.note(&format!(
                    "ignoring a message that is not a valid event: {error}"
                ));
            }
            Some(Ok(Update::Event { event, raw, .. })) => {
                if let Err(error) = out.event(&event, &raw) {
                    // A closed pipe (`tail … | head`) is the reader saying it is done.
                    let status = if error.kind() == io::ErrorKind::BrokenPipe {
                        ExitCode::SUCCESS
                    } else {
                        out.note(&format!("cannot write to stdout: {error}"));
                        ExitCode::FAILURE
                    };
                    updates.close().await;
                    out.finish();
                    return status;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                out.finish();
                note(&describe_error(&error));
                return ExitCode::from(EXIT_REFUSED);
            }
        }
    }
}

/// Where events and notes go, and the progress bar when there is one.
struct Output {
    json: bool,
    /// Progress as a bar: stdout is a terminal and the output is for people.
    bars: bool,
    bar: Option<ProgressBar>,
}

impl Output {
    fn new(json: bool) -> Self {
        Self {
            json,
            bars: !json && io::stdout().is_terminal(),
            bar: None,
        }
    }

    /// A line on stderr, without tearing the progress bar.
    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| note(text)),
            None => note(text),
        }
    }

    fn event(&mut self, event: &Event, raw: &[u8]) -> io::Result<()> {
        if self.json {
            let mut line = compact_json(raw);
            line.push(b'\n');
            let mut stdout = io::stdout().lock();
            stdout.write_all(&line)?;
            return stdout.flush();
        }
        if self.bars {
            if let Event::Campaign(CampaignEvent::Progress(progress)) = event {
                self.show_progress(progress);
                return Ok(());
            }
            if let Some(bar) = self.bar.take() {
                // The last state stays on screen above what follows.
                bar.finish();
            }
        }
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{}", describe_event(event))?;
        stdout.flush()
    }

    fn show_progress(&mut self, progress: &Progress) {
        let bar = self.bar.get_or_insert_with(|| {
            let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({percent}%)")
                .map(|style| style.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            ProgressBar::with_draw_target(Some(progress.total), ProgressDrawTarget::stdout())
                .with_style(style)
        });
        // Message first, position last: each call may redraw.
        bar.set_message(format!(
            "{}: delivered {}, bounced {}, opened {}",
            clean(progress.campaign_id.as_str()),
            progress.delivered,
            progress.bounced,
            progress.opened
        ));
        bar.set_length(progress.total);
        bar.set_position(progress.sent);
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

fn note(text: &str) {
    let _ = writeln!(io::stderr().lock(), "tail: {text}");
}

fn refuse(text: &str) -> ExitCode {
    note(text);
    ExitCode::from(EXIT_REFUSED)
}

fn init_logging() {
    let Ok(mut filter) = tracing_subscriber::EnvFilter::try_from_default_env() else {
        return;
    };
    // The client writes its own handshake, so no record holds the key; this directive only
    // guards against a future change putting tungstenite's (which logs the whole request,
    // key included, at trace level) back on the path.
    if let Ok(directive) = "tungstenite::handshake::client=debug".parse() {
        filter = filter.add_directive(directive);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// The frame without insignificant whitespace: one line, bytes otherwise as received (field
/// order, unknown fields and number spelling kept). The frame decoded as an event, so it is a
/// JSON object.
fn compact_json(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for &byte in raw {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            if byte == b'"' {
                in_string = true;
            }
            out.push(byte);
        }
    }
    out
}

/// Server text made safe for a terminal: control characters (escape sequences) are shown
/// escaped instead of being interpreted.
fn clean(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_debug().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

fn optional(label: &str, value: Option<impl std::fmt::Display>) -> String {
    value
        .map(|value| format!(", {label} {}", clean(&value.to_string())))
        .unwrap_or_default()
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::Inbox(inbox) => match inbox {
            InboxEvent::EmailReceived(e) => format!(
                "{}  email_received  from {}: {}{}{}",
                e.received_at,
                clean(&e.from),
                clean(&e.subject),
                optional("to", e.to.as_ref()),
                optional("message id", e.message_id.as_ref()),
            ),
            InboxEvent::Bounce(e) => format!(
                "{}  bounce  {}{}{}{}",
                e.bounced_at,
                clean(&e.email),
                optional(
                    "type",
                    e.bounce_type.as_ref().map(|t| match t {
                        misar_proto::event::BounceType::Hard => "hard".to_owned(),
                        misar_proto::event::BounceType::Soft => "soft".to_owned(),
                        misar_proto::event::BounceType::Other(other) => other.clone(),
                        other => format!("{other:?}"),
                    })
                ),
                optional("reason", e.reason.as_ref()),
                optional("campaign", e.campaign_id.as_ref()),
            ),
            InboxEvent::Complaint(e) => format!(
                "{}  complaint  {}{}",
                e.complained_at,
                clean(&e.email),
                optional("campaign", e.campaign_id.as_ref()),
            ),
            InboxEvent::Unsubscribe(e) => format!(
                "{}  unsubscribe  {}{}",
                e.unsubscribed_at,
                clean(&e.email),
                optional("campaign", e.campaign_id.as_ref()),
            ),
            InboxEvent::CampaignStarted(e) => format!(
                "{}  campaign_started  {} ({}): {} recipients",
                e.started_at,
                clean(&e.campaign_name),
                clean(e.campaign_id.as_str()),
                e.total,
            ),
            InboxEvent::CampaignCompleted(e) => format!(
                "{}  campaign_completed  {} ({}): sent {}, delivered {}, opened {}",
                e.completed_at,
                clean(&e.campaign_name),
                clean(e.campaign_id.as_str()),
                e.sent,
                e.delivered,
                e.opened,
            ),
            InboxEvent::Unknown(e) => unknown(&e.kind, &e.raw),
            other => format!("{}  (not shown by this version)", clean(other.type_name())),
        },
        Event::Campaign(campaign) => match campaign {
            CampaignEvent::Progress(e) => format!(
                "progress  {}: sent {}/{} ({}), delivered {}, bounced {}, opened {}",
                clean(e.campaign_id.as_str()),
                e.sent,
                e.total,
                percent(e.sent, e.total),
                e.delivered,
                e.bounced,
                e.opened,
            ),
            CampaignEvent::Completed(e) => format!(
                "completed  {}: sent {}, delivered {}, bounced {}, opened {}{}",
                clean(e.campaign_id.as_str()),
                e.sent,
                e.delivered,
                e.bounced,
                e.opened,
                optional("at", e.completed_at.as_ref()),
            ),
            CampaignEvent::Failed(e) => format!(
                "failed  {}: {}{}{}",
                clean(e.campaign_id.as_str()),
                clean(&e.error),
                optional("sent", e.sent),
                optional("at", e.failed_at.as_ref()),
            ),
            CampaignEvent::Cancelled(e) => format!(
                "cancelled  {}{}{}",
                clean(e.campaign_id.as_str()),
                optional("sent", e.sent),
                optional("at", e.cancelled_at.as_ref()),
            ),
            CampaignEvent::Unknown(e) => unknown(&e.kind, &e.raw),
            other => format!("{}  (not shown by this version)", clean(other.type_name())),
        },
        other => format!("{}  (not shown by this version)", clean(other.type_name())),
    }
}

fn unknown(kind: &str, raw: &[u8]) -> String {
    let json = compact_json(raw);
    format!(
        "{}  (unknown type) {}",
        clean(kind),
        clean(&String::from_utf8_lossy(&json))
    )
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    // u128: no overflow for any pair of u64 counts.
    let pct = u128::from(part) * 100 / u128::from(whole);
    format!("{pct}%")
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

fn describe_disconnect(cause: &Disconnect) -> String {
    match cause {
        // Only reported when the client reconnects: on a campaign, a 1000 before its terminal
        // event (a proxy's, say) is no finish, so "campaign finished" would mislead.
        Disconnect::Closed(CloseCode::Normal) => {
            "the server closed the connection with 1000 (normal closure)".to_owned()
        }
        Disconnect::Closed(code) => {
            let reason = code.default_reason();
            if reason.is_empty() {
                format!("the server closed the connection with {code}")
            } else {
                format!("the server closed the connection with {code} ({reason})")
            }
        }
        Disconnect::ClosedWithoutCode => "the server closed the connection".to_owned(),
        Disconnect::Dropped => "the connection dropped or the server went silent".to_owned(),
        Disconnect::HandshakeRejected { status } => format!("the server answered HTTP {status}"),
        Disconnect::ConnectFailed => "could not connect".to_owned(),
        other => format!("the connection ended ({other:?})"),
    }
}

fn describe_error(error: &SubscriptionError) -> String {
    match error {
        SubscriptionError::Rejected {
            status, rejection, ..
        } => {
            let detail = rejection
                .as_ref()
                .map(|body| match &body.message {
                    Some(message) => format!(" ({}: {})", clean(&body.error), clean(message)),
                    None => format!(" ({})", clean(&body.error)),
                })
                .unwrap_or_default();
            let hint = if error.is_auth_failure() {
                " Check the API key, and that the campaign belongs to its account."
            } else {
                ""
            };
            format!(
                "the server refused the connection with HTTP {status}{detail}; not retrying.{hint}"
            )
        }
        SubscriptionError::Closed {
            code,
            fatal,
            reason,
        } => {
            let meaning = match (code, fatal) {
                (CloseCode::Unauthorized, _) | (_, Fatal::Unauthorized) => {
                    "unauthorized: the API key is missing, invalid or was revoked"
                }
                (CloseCode::Forbidden, _) | (_, Fatal::Forbidden) => {
                    "forbidden: the campaign does not belong to this account"
                }
                _ => "the server does not allow retrying",
            };
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(" (server said: {})", clean(reason))
            };
            format!(
                "the server closed the connection with {code} — {meaning}{reason}; not retrying."
            )
        }
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_json_removes_only_insignificant_whitespace() {
        let raw = b"{ \"type\" : \"x\",\n \"s\": \"a b\\\" c\\\\\" , \"n\" : [1, 2] }";
        assert_eq!(
            compact_json(raw),
            br#"{"type":"x","s":"a b\" c\\","n":[1,2]}"#.to_vec()
        );
    }

    #[test]
    fn target_splits_prefix_and_channel() {
        let t = Target::parse("ws://127.0.0.1:8080/mail/ws/inbox").unwrap();
        assert_eq!(t.base, "ws://127.0.0.1:8080/mail/ws");
        assert_eq!(t.channel, Channel::Inbox);
        let t = Target::parse("WSS://h/api/campaigns/c-1?region=eu").unwrap();
        assert_eq!(t.base, "wss://h/api?region=eu");
        assert_eq!(t.shown, "wss://h/api/campaigns/c-1");
        assert!(matches!(t.channel, Channel::Campaign(id) if id.as_str() == "c-1"));
        let t = Target::parse("ws://h/inbox").unwrap();
        assert_eq!(t.base, "ws://h");
        for bad in [
            "http://h/mail/ws/inbox",
            "ws://h/mail/ws",
            "ws://h/mail/ws/campaigns/a%20b",
            "ws://h/mail/ws/campaigns/",
            "not a url",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_places() {
        let style = |extra: &[&str]| {
            let mut argv = vec!["tail", "--url", "ws://h/inbox", "--key", "msk_k"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).map(|args| args.auth_style())
        };
        assert_eq!(style(&[]).unwrap(), AuthStyle::Header);
        assert_eq!(style(&["--auth", "header"]).unwrap(), AuthStyle::Header);
        assert_eq!(style(&["--auth", "query"]).unwrap(), AuthStyle::Query);
        assert_eq!(style(&["--query-token"]).unwrap(), AuthStyle::Query);
        assert_eq!(
            style(&["--auth", "subprotocol"]).unwrap(),
            AuthStyle::Subprotocol
        );
        assert!(style(&["--auth", "cookie"]).is_err());
        assert!(style(&["--auth", "header", "--query-token"]).is_err());
    }

    #[test]
    fn terminal_text_is_escaped() {
        assert_eq!(clean("hi\u{1b}[2J"), "hi\\u{1b}[2J");
        assert_eq!(clean("plain"), "plain");
    }
}
