//! The demo page in headless Chromium (Debian's `chromium`), driven over the DevTools
//! protocol: the page connects with the key in its subprotocols (§2.12: the server echoes
//! `misar.v1`, the key stays out of the URL), a published event appears in the DOM, and a
//! simulated campaign's bar reaches 100 %; the page opened as `/?auth=query` connects with
//! `?token=`; after a simulated drop the page resumes (§2.11) and shows the events published
//! while it was away ("recovered N missed events"); after a server restart it resumes too and,
//! the in-memory history being gone, says "could not recover: reload", clears what it showed
//! and goes on live.
//!
//! Without Chromium the test prints a notice and passes, unless `MISAR_REQUIRE_SERVICES=1`
//! (as in CI), where it fails.

mod common;

use std::time::Duration;

use common::cdp::{Browser, CHROMIUM};
use common::demo::DemoProcess;
use common::request;

const WAIT: Duration = Duration::from_secs(30);

/// Publishes an `email_received` with `subject` to alice's inbox through the demo's endpoint.
async fn publish_email(addr: std::net::SocketAddr, subject: &str) {
    let body = format!(
        r#"{{"type":"email_received","from":"carol@example.com","subject":"{subject}","receivedAt":"2026-05-27T10:15:00Z"}}"#
    );
    let published = request(
        addr,
        "POST",
        "/dev/publish/inbox/alice",
        &["Content-Type: application/json"],
        body.as_bytes(),
    )
    .await;
    assert_eq!(published.status, 202);
}

/// A page condition: the events list shows an `email_received` whose summary has `subject`.
fn shows_email(subject: &str) -> String {
    format!(
        "[...document.querySelectorAll('#events li[data-type=email_received] .summary')].some(e => e.textContent.includes({}))",
        serde_json::json!(subject)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_events_and_campaign_progress() {
    let required = std::env::var("MISAR_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let mut browser = match Browser::launch().await {
        Ok(Some(browser)) => browser,
        Ok(None) if !required => {
            eprintln!(
                "NOTICE: {CHROMIUM} not found; skipping the browser test (apt-get install chromium)"
            );
            return;
        }
        Ok(None) => panic!("{CHROMIUM} is required (MISAR_REQUIRE_SERVICES=1)"),
        Err(e) => panic!("could not start Chromium: {e}"),
    };
    let mut demo = DemoProcess::start(&[
        "--tick-ms",
        "60",
        "--ping-interval-ms",
        "200",
        "--pong-timeout-ms",
        "1000",
    ])
    .await;
    let url = format!("http://{}/", demo.addr);
    let page = browser.open(&url).await.expect("open the page");

    // The page connects by itself with the preselected key.
    let key = browser
        .wait_for(&page, "document.getElementById('key').value", WAIT)
        .await
        .unwrap();
    assert_eq!(key, "msk_demo_alice");
    browser
        .wait_for(
            &page,
            "document.getElementById('status').dataset.state === 'open'",
            WAIT,
        )
        .await
        .expect("the inbox connects");
    // With the subprotocol: the browser accepted the server's echo of `misar.v1`.
    let protocol = browser
        .eval(&page, "document.getElementById('status').dataset.protocol")
        .await
        .unwrap();
    assert_eq!(protocol, "misar.v1");
    assert_eq!(
        browser
            .eval(&page, "document.getElementById('auth').value")
            .await
            .unwrap(),
        "subprotocol"
    );

    // A published event appears in the list.
    let subject = format!("browser test {}", std::process::id());
    publish_email(demo.addr, &subject).await;
    browser
        .wait_for(&page, &shows_email(&subject), WAIT)
        .await
        .expect("the published event appears");

    // A simulated campaign starts, its socket opens, and its bar reaches 100 %.
    let id = browser
        .wait_for(
            &page,
            "(() => { const c = document.querySelector('.campaign[data-state=completed][data-percent=\"100\"]'); return c && c.dataset.campaignId; })()",
            WAIT,
        )
        .await
        .expect("a campaign completes at 100 %");
    let width = browser
        .eval(
            &page,
            &format!(
                "document.querySelector('.campaign[data-campaign-id={}] .fill').style.width",
                serde_json::json!(id)
            ),
        )
        .await
        .unwrap();
    assert_eq!(width, "100%");
    // Its socket was closed by the server with 1000 after the terminal event.
    browser
        .wait_for(
            &page,
            &format!(
                "document.querySelector('.campaign[data-campaign-id={}]').dataset.closeCode === '1000'",
                serde_json::json!(id)
            ),
            WAIT,
        )
        .await
        .expect("the campaign socket closed with 1000");

    // The other choice: `?token=`, no subprotocol.
    let query_page = browser
        .open(&format!("http://{}/?auth=query", demo.addr))
        .await
        .expect("open the page");
    browser
        .wait_for(
            &query_page,
            "document.getElementById('status').dataset.state === 'open' && document.getElementById('auth').value === 'query'",
            WAIT,
        )
        .await
        .expect("the inbox connects with ?token=");
    assert_eq!(
        browser
            .eval(
                &query_page,
                "document.getElementById('status').dataset.protocol"
            )
            .await
            .unwrap(),
        ""
    );

    // The server panel reads /metrics every second: this page's inbox socket is counted.
    browser
        .wait_for(
            &page,
            "document.getElementById('server-panel').dataset.ready === 'true' && Number(document.getElementById('m-open').textContent) >= 1",
            WAIT,
        )
        .await
        .expect("the server panel shows the open connections");

    // Missed events (§2.11) across a drop: events published while the page is away are
    // replayed on its reconnect, and the page says how many it recovered.
    browser
        .eval(&page, "document.getElementById('drop').click()")
        .await
        .unwrap();
    browser
        .wait_for(
            &page,
            "document.getElementById('status').dataset.state === 'reconnecting'",
            WAIT,
        )
        .await
        .expect("the page dropped its inbox socket");
    let missed = [
        format!("missed one {}", std::process::id()),
        format!("missed two {}", std::process::id()),
    ];
    for subject in &missed {
        publish_email(demo.addr, subject).await;
    }
    browser
        .wait_for(
            &page,
            // At least the two (the simulation may publish during the outage too).
            "(() => { const r = document.getElementById('resume'); const m = /recovered (\\d+) missed events?/.exec(r.textContent); return r.dataset.state === 'recovered' && m !== null && Number(m[1]) >= 2; })()",
            WAIT,
        )
        .await
        .expect("the page recovered the two missed events");
    for subject in &missed {
        browser
            .wait_for(&page, &shows_email(subject), WAIT)
            .await
            .expect("a recovered event is shown");
    }

    if let Ok(path) = std::env::var("MISAR_SCREENSHOT") {
        let png = browser.screenshot(&page).await.unwrap();
        std::fs::write(&path, png).unwrap();
    }

    // Shutdown: the page sees close 1001 and starts reconnecting.
    demo.signal("TERM");
    browser
        .wait_for(
            &page,
            "[...document.querySelectorAll('#log li')].some(e => e.textContent.includes('inbox closed: code 1001'))",
            WAIT,
        )
        .await
        .expect("the page shows the 1001");
    assert!(demo.wait(Duration::from_secs(10)).await.success());
    let logs = demo.stderr();

    // Missed events (§2.11): the page kept its position and resumes from it. A restarted
    // in-memory server has a new epoch, so it honestly cannot recover: the page says so,
    // clears what it showed, and goes on live.
    let position = browser
        .eval(&page, "document.getElementById('resume').dataset.position")
        .await
        .unwrap();
    let position = position.as_str().unwrap_or_default().to_owned();
    assert!(
        position.contains(':'),
        "the page kept a position: {position:?}"
    );
    let restarted = DemoProcess::start_at(
        &demo.addr.to_string(),
        &[
            "--no-simulation",
            "--ping-interval-ms",
            "200",
            "--pong-timeout-ms",
            "1000",
        ],
    )
    .await;
    browser
        .wait_for(
            &page,
            "document.getElementById('resume').dataset.state === 'not-recovered' && document.getElementById('resume').textContent.includes('could not recover: reload')",
            WAIT,
        )
        .await
        .expect("the page says it could not recover");
    assert_eq!(
        browser
            .eval(&page, "document.querySelectorAll('#events li').length")
            .await
            .unwrap(),
        0,
        "the page cleared what it showed"
    );
    let new_position = browser
        .eval(&page, "document.getElementById('resume').dataset.position")
        .await
        .unwrap();
    assert_ne!(
        new_position.as_str(),
        Some(position.as_str()),
        "a new epoch"
    );
    let after = format!("after restart {}", std::process::id());
    publish_email(restarted.addr, &after).await;
    browser
        .wait_for(&page, &shows_email(&after), WAIT)
        .await
        .expect("live events after the failed recovery");
    // Its events carry their offset, and the page keeps moving its position.
    browser
        .wait_for(
            &page,
            &format!(
                "document.getElementById('resume').dataset.position !== {}",
                serde_json::json!(new_position)
            ),
            WAIT,
        )
        .await
        .expect("the position follows the events");
    drop(restarted);
    assert!(
        !logs.contains("msk_demo_alice") && !logs.contains("token="),
        "{logs}"
    );
    // The server saw both places.
    assert!(logs.contains("auth=Subprotocol"), "{logs}");
    assert!(logs.contains("auth=Query"), "{logs}");
    browser.close().await;
}
