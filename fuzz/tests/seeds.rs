//! Plain `cargo test` (stable, no libFuzzer) over the fuzz crate: the committed seeds are the
//! generator's, every seed passes its target's checks, and the structured seeds read back as
//! the scenarios they were written from (so the byte layout still matches `arbitrary`'s).
//!
//! Also replays `fuzz/artifacts/<target>/*` when present, so a crash found by `fuzz/run` can be
//! re-run here with a debugger-friendly build.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use misar_proto_fuzz::{
    TARGETS, client_session, encode, run_target, seeds, server_session, streams,
};

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

#[test]
fn committed_seeds_are_the_generated_ones() {
    let generated = seeds::all();
    for target in TARGETS {
        let on_disk: BTreeSet<String> = fs::read_dir(seeds_dir().join(target))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let expected: BTreeSet<String> = generated
            .iter()
            .filter(|s| s.target == target)
            .map(|s| s.name.clone())
            .collect();
        assert!(!expected.is_empty(), "{target} has no seeds");
        assert_eq!(
            on_disk, expected,
            "fuzz/seeds/{target} is stale: run `cargo run --example make_seeds` in fuzz/"
        );
    }
    for seed in &generated {
        let path = seeds_dir().join(seed.target).join(&seed.name);
        assert_eq!(
            fs::read(&path).ok().as_ref(),
            Some(&seed.bytes),
            "{} differs from the generator",
            path.display()
        );
    }
}

#[test]
fn every_seed_passes_its_target() {
    let mut count = 0;
    for seed in seeds::all() {
        assert!(run_target(seed.target, &seed.bytes), "{}", seed.target);
        count += 1;
    }
    assert!(count > 100, "only {count} seeds");
}

#[test]
fn structured_seeds_read_back_as_written() {
    for (name, setup, ops) in seeds::server_scenarios() {
        let bytes = encode::input(&setup, &ops);
        assert_eq!(
            server_session::parse(&bytes),
            Some((setup, ops)),
            "server scenario {name}"
        );
    }
    for (name, setup, ops) in seeds::client_scenarios() {
        let bytes = encode::input(&setup, &ops);
        assert_eq!(
            client_session::parse(&bytes),
            Some((setup, ops)),
            "client scenario {name}"
        );
    }
    for (name, setup, ops) in seeds::streams_scenarios() {
        let bytes = encode::input(&setup, &ops);
        assert_eq!(
            streams::parse(&bytes),
            Some((setup, ops)),
            "streams scenario {name}"
        );
    }
}

#[test]
fn artifacts_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    for target in TARGETS {
        let Ok(dir) = fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in dir.filter_map(Result::ok) {
            let path = entry.path();
            if let Ok(bytes) = fs::read(&path) {
                eprintln!("replaying {}", path.display());
                run_target(target, &bytes);
            }
        }
    }
}

/// The scenarios behind the structured seeds reach what their names say, so the seeds really
/// put the fuzzer at those corners.
#[test]
fn server_scenarios_do_what_they_say() {
    use misar_proto::close::CloseCode;
    use misar_proto::server::{CloseCause, Ending};

    let reports: Vec<_> = seeds::server_scenarios()
        .into_iter()
        .map(|(name, setup, ops)| (name, server_session::run_scenario(&setup, &ops)))
        .collect();
    let get = |wanted: &str| {
        reports
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, report)| report.clone())
            .unwrap_or_else(|| panic!("no scenario {wanted}"))
    };
    let expect = |name: &str, cause: CloseCause, code: Option<CloseCode>, ending: Ending| {
        let report = get(name);
        assert!(report.closed_by_scenario, "{name} did not close by itself");
        assert_eq!(report.summary.cause, cause, "{name}");
        assert_eq!(report.summary.sent_code, code, "{name}");
        assert_eq!(report.summary.ending, ending, "{name}");
        report
    };
    let inbox = expect(
        "inbox-events-heartbeat-shutdown",
        CloseCause::Shutdown,
        Some(CloseCode::GoingAway),
        Ending::Handshake,
    );
    assert_eq!(inbox.summary.events_sent, 3);
    assert_eq!(inbox.pings, 2);
    let campaign = expect(
        "campaign-progress-coalesces-then-terminal",
        CloseCause::Finished,
        Some(CloseCode::Normal),
        Ending::Handshake,
    );
    // Held back: progress 1 is superseded by 2, and 2 by 3; the ordinary event goes out
    // first, then progress 3 and the terminal event (the ordinary one after it is refused).
    assert_eq!(campaign.summary.events_sent, 3);
    expect(
        "heartbeat-timeout-then-grace",
        CloseCause::HeartbeatTimeout,
        Some(CloseCode::GoingAway),
        Ending::GraceExpired,
    );
    let overflow = expect(
        "slow-consumer-overflow",
        CloseCause::SlowConsumer,
        Some(CloseCode::TryAgainLater),
        Ending::TransportClosed,
    );
    assert_eq!(overflow.summary.unsent_events, 3);
    expect(
        "client-limits-fast-clock",
        CloseCause::TooManyMessages,
        Some(CloseCode::PolicyViolation),
        Ending::GraceExpired,
    );
    expect(
        "message-too-big",
        CloseCause::MessageTooBig,
        Some(CloseCode::MessageTooBig),
        Ending::GraceExpired,
    );
    expect(
        "ping-too-big",
        CloseCause::ProtocolError,
        Some(CloseCode::ProtocolError),
        Ending::Handshake,
    );
    expect(
        "revoke-refused-then-accepted",
        CloseCause::Revoked,
        Some(CloseCode::Forbidden),
        Ending::GraceExpired,
    );
    let app = expect(
        "application-close-and-late-clock",
        CloseCause::Application,
        CloseCode::from_wire(4000).ok(),
        Ending::Handshake,
    );
    assert_eq!(app.summary.unsent_events, 1);
    expect(
        "peer-closes-with-reserved-code",
        CloseCause::PeerClosed,
        Some(CloseCode::ProtocolError),
        Ending::Handshake,
    );
    expect(
        "transport-drops",
        CloseCause::TransportClosed,
        None,
        Ending::TransportClosed,
    );
    let rejected = expect(
        "rejected-4401",
        CloseCause::Rejected,
        Some(CloseCode::Unauthorized),
        Ending::Handshake,
    );
    assert_eq!((rejected.summary.events_sent, rejected.pongs), (0, 0));
    expect(
        "rejected-4403-silent-peer",
        CloseCause::Rejected,
        Some(CloseCode::Forbidden),
        Ending::GraceExpired,
    );
}

#[test]
fn client_scenarios_do_what_they_say() {
    use misar_proto::client::{ClientOutcome, ClientState};
    use misar_proto::close::{Fatal, Pace};
    use misar_proto::message::Message;

    let reports: Vec<_> = seeds::client_scenarios()
        .into_iter()
        .map(|(name, setup, ops)| (name, client_session::run_scenario(&setup, &ops)))
        .collect();
    let get = |wanted: &str| {
        reports
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, report)| report.clone())
            .unwrap_or_else(|| panic!("no scenario {wanted}"))
    };
    let reconnect = |o: &ClientOutcome, p: Pace| matches!(o, ClientOutcome::Reconnect { pace, .. } if *pace == p);

    let inbox = get("inbox-events-reconnect-close");
    assert_eq!(inbox.outcomes.len(), 4, "{:?}", inbox.outcomes);
    assert!(reconnect(&inbox.outcomes[0], Pace::Normal));
    assert!(reconnect(&inbox.outcomes[1], Pace::Normal));
    assert!(matches!(inbox.outcomes[3], ClientOutcome::Finish));
    assert_eq!(inbox.state, ClientState::Done);
    assert!(inbox.events >= 4);
    assert!(
        inbox
            .transmitted
            .iter()
            .any(|m| matches!(m, Message::Pong(_)))
    );

    let campaign = get("campaign-progress-then-completed");
    assert_eq!(campaign.outcomes, [ClientOutcome::Finish]);
    assert_eq!(campaign.events, 2);

    let terminal = get("campaign-terminal-without-server-close");
    assert_eq!(terminal.outcomes, [ClientOutcome::Finish]);
    assert!(
        matches!(terminal.transmitted.as_slice(), [Message::Close(Some(f))] if f.code.as_u16() == 1000)
    );

    let refused = get("refused-403-stops");
    assert_eq!(
        refused.outcomes,
        [ClientOutcome::Stop(Fatal::HandshakeForbidden)]
    );
    assert_eq!(refused.state, ClientState::Done);

    let dead = get("silent-server-declared-dead");
    assert_eq!(dead.outcomes.len(), 2, "{:?}", dead.outcomes);
    assert_eq!(dead.state, ClientState::Idle);

    let revoked = get("revoked-4401-mid-session");
    assert_eq!(revoked.outcomes, [ClientOutcome::Stop(Fatal::Unauthorized)]);

    let invalid = get("invalid-frames-and-codes");
    assert_eq!(invalid.events, 3);
    assert!(
        !invalid
            .transmitted
            .iter()
            .any(|m| matches!(m, Message::Pong(_)))
    );
    assert_eq!(invalid.outcomes.len(), 3, "{:?}", invalid.outcomes);
    assert!(reconnect(&invalid.outcomes[2], Pace::Longer));

    let resumed = get("resume-across-reconnects");
    assert_eq!(resumed.outcomes.len(), 3, "{:?}", resumed.outcomes);
    assert_eq!(resumed.events, 7, "3 answers and 4 events");
    let unanswered = get("resume-unanswered-and-broken");
    assert_eq!(unanswered.outcomes.len(), 2, "{:?}", unanswered.outcomes);
    // Unanswered + progress; invalid resume frame + unanswered + the event.
    assert_eq!(unanswered.events, 5);

    assert_eq!(get("query-auth-odd-url").outcomes.len(), 1);
    assert_eq!(get("url-with-token-refused").state, ClientState::Done);
}

/// The scenarios behind the `streams` seeds reach what their names say.
#[test]
fn streams_scenarios_do_what_they_say() {
    use misar_proto::server::CloseCause::{self, *};

    let reports: Vec<_> = seeds::streams_scenarios()
        .into_iter()
        .map(|(name, setup, ops)| (name, streams::run_scenario(&setup, &ops)))
        .collect();
    let get = |wanted: &str| {
        reports
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, report)| report.clone())
            .unwrap_or_else(|| panic!("no scenario {wanted}"))
    };
    let causes =
        |report: &streams::StreamsReport| -> Vec<Option<CloseCause>> { report.causes.clone() };

    let race = get("finished-race");
    // The stray progress (published and relayed) and the cancellation are refused; the
    // late joiner gets `completed` first and its session ends with 1000.
    assert_eq!(race.refused_finished, 3, "{race:?}");
    assert_eq!(race.terminal_firsts, 1, "{race:?}");
    assert_eq!(race.relayed_accepted, 1, "{race:?}");
    assert_eq!(causes(&race), [Some(Finished); 3]);

    let revoke = get("revoke-race-old-mark");
    assert_eq!(
        (revoke.admitted_4401, revoke.admitted_4403),
        (1, 1),
        "{revoke:?}"
    );
    // Once by age (11 s past a 10 s memory), once by count (3 revocations, 2 remembered).
    assert_eq!(revoke.refused_stale, 2, "{revoke:?}");
    assert_eq!(revoke.revoked, 3, "{revoke:?}");
    assert_eq!(
        revoke.texts, 1,
        "only the fresh campaign subscriber got the progress"
    );
    assert_eq!(&causes(&revoke)[..5], [Some(Revoked); 5]);

    let eviction = get("eviction");
    assert_eq!(eviction.evictions, 3, "{eviction:?}");
    assert_eq!(
        eviction.refused_finished, 0,
        "an evicted campaign took a progress"
    );
    assert_eq!(eviction.terminal_firsts, 0, "{eviction:?}");

    let off = get("cache-off-small-events");
    // Failed and email over 120 bytes, unknown inbox and campaign types, a mismatch.
    assert_eq!(off.refused_invalid, 5, "{off:?}");
    assert_eq!(
        off.relayed_refused, 1,
        "the grown progress is over the bound"
    );
    assert_eq!(off.evictions, 2, "{off:?}");
    assert_eq!(
        off.refused_finished, 0,
        "a terminal event stuck with the cache off"
    );

    let relayed = get("relayed-newer-type");
    assert_eq!(relayed.relayed_accepted, 5, "{relayed:?}");
    assert_eq!(relayed.relayed_newer, 3, "{relayed:?}");
    assert_eq!(relayed.relayed_refused, 6, "{relayed:?}");
    assert_eq!(relayed.refused_finished, 1, "{relayed:?}");
    assert_eq!(relayed.terminal_firsts, 1, "{relayed:?}");

    let limits = get("limits-and-shutdown");
    assert_eq!(limits.refused_limit, 2, "{limits:?}");
    assert_eq!(limits.refused_shutdown, 1, "{limits:?}");
    assert_eq!(limits.admitted, 4, "{limits:?}");

    let slow = get("slow-consumer-and-time");
    assert_eq!(
        causes(&slow),
        [Some(HeartbeatTimeout), Some(SlowConsumer)],
        "{slow:?}"
    );
    assert_eq!(slow.texts, 5, "{slow:?}");
}
