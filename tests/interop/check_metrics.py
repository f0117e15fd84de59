#!/usr/bin/env python3
"""Checks the demo's `GET /metrics` (issue 15) with a Prometheus text-format parser that is not
ours (`prometheus_client`, pip install prometheus-client).

Starts the demo binary itself, does known things — 3 inbox clients accepted, 2 refused with 403,
one 404, one campaign finished with 1000, one slow consumer closed with 1013 — then scrapes
`/metrics`, parses it, and asserts the exact counts; that no label value is an account, a
campaign id or a key; and that every metric family shown is in README.md's metrics table with
the same type and labels.

    python3 tests/interop/check_metrics.py [path/to/demo-binary] [path/to/README.md]
"""
import asyncio, base64, json, os, re, socket, subprocess, sys, time, urllib.error, urllib.request

import websockets

import demo_fixtures
from demo_fixtures import ALICE, BOB, C_ALICE, C_BOB, check, failures, free_port
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus

DEMO = sys.argv[1] if len(sys.argv) > 1 else "target/debug/examples/demo"
README = sys.argv[2] if len(sys.argv) > 2 else "README.md"
SECRETS = {"alice", "bob", ALICE, BOB, C_ALICE, C_BOB, "msk_wrong"}


def start_demo(*extra):
    return demo_fixtures.start_demo(DEMO, *extra)


def http(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(port):
    status, text = http(port, "GET", "/metrics")
    assert status == 200, status
    return text


def samples(text):
    """{(sample name, frozenset(labels)): value} and {family: (type, label names)}."""
    values, families = {}, {}
    for family in text_string_to_metric_families(text):
        labels = set()
        for s in family.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
            labels |= {k for k in s.labels if k not in ("le", "quantile")}
        families[family.name] = (family.type, labels)
    return values, families


def value(values, name, **labels):
    return values.get((name, frozenset(labels.items())), 0.0)


def big_email(i):
    # ~30 KB each (under the 64 KiB limit): a reader that stops reading backs up sooner.
    return {"type": "email_received", "from": f"p{i}@example.com", "subject": "x" * 30_000,
            "receivedAt": "2026-05-27T10:15:00Z"}


def slow_reader(port, path, key):
    """A raw upgrade with a 4 KiB receive buffer that then never reads."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    ws_key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nAuthorization: Bearer {key}\r\n"
               f"Sec-WebSocket-Key: {ws_key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:40]
    return s


async def scenario(port):
    base = f"ws://127.0.0.1:{port}/mail/ws"
    auth = {"Authorization": f"Bearer {ALICE}"}
    # 3 accepted inbox clients, kept open.
    inbox = [await websockets.connect(f"{base}/inbox", additional_headers=auth) for _ in range(3)]
    # 2 refused with 403 (a key no one has).
    for _ in range(2):
        try:
            async with websockets.connect(f"{base}/inbox?token=msk_wrong"):
                check(False, "a wrong key is refused")
        except InvalidStatus as e:
            check(e.response.status_code == 403, "a wrong key: HTTP 403")
    # One 404.
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/mail/ws/nowhere", additional_headers=auth):
            check(False, "an unknown path is refused")
    except InvalidStatus as e:
        check(e.response.status_code == 404, "an unknown path: HTTP 404")
    # One campaign finished with 1000.
    async with websockets.connect(f"{base}/campaigns/{C_ALICE}", additional_headers=auth) as c:
        done = {"type": "completed", "campaignId": C_ALICE, "sent": 10, "delivered": 10, "bounced": 0, "opened": 2}
        http(port, "POST", f"/dev/publish/campaigns/{C_ALICE}", done)
        check(json.loads(await asyncio.wait_for(c.recv(), 5))["type"] == "completed", "the terminal event")
        try:
            await asyncio.wait_for(c.recv(), 5)
        except ConnectionClosed as e:
            check(e.rcvd is not None and e.rcvd.code == 1000, "close 1000 after the terminal event")
    # One slow consumer (bob's inbox, so alice's clients see none of it), closed with 1013.
    slow = slow_reader(port, "/mail/ws/inbox", BOB)
    deadline = time.monotonic() + 30
    published = 0
    while time.monotonic() < deadline:
        http(port, "POST", "/dev/publish/inbox/bob", big_email(published))
        published += 1
        if published % 10 == 0:
            values, _ = samples(scrape(port))
            if value(values, "misar_queue_overflows_total") >= 1:
                break
    check(published < 10_000, f"the slow consumer was closed after {published} events")
    slow.close()
    # Wait for the campaign and slow connections to be gone from the gauge.
    for _ in range(100):
        values, _ = samples(scrape(port))
        if value(values, "misar_connections_open", channel="inbox") == 3 and \
                value(values, "misar_connections_open", channel="campaign") == 0:
            break
        await asyncio.sleep(0.05)
    # The scrape, while the 3 inbox clients are still connected.
    text = scrape(port)
    for ws in inbox:
        await ws.close()
    return text


def check_readme(families):
    rows = {}
    in_table = False
    for line in open(README, encoding="utf-8"):
        m = re.match(r"\|\s*`(misar_[a-z_]+)`\s*\|\s*(\w+)\s*\|\s*([^|]*)\|", line)
        if m:
            in_table = True
            labels = set(re.findall(r"`([a-z_]+)`", m.group(3)))
            rows[m.group(1)] = (m.group(2), labels)
        elif in_table and not line.startswith("|"):
            in_table = False
    check(len(rows) >= 15, f"README.md lists the metrics ({len(rows)} rows)")
    for name, (kind, labels) in sorted(families.items()):
        if not name.startswith("misar_"):
            continue
        # prometheus_client names a counter's family without `_total`.
        shown = name + "_total" if kind == "counter" else name
        row = rows.get(shown)
        check(row is not None, f"{shown} is in README.md's table")
        if row is not None:
            check(row[0] == kind, f"{shown}: README says {row[0]}, /metrics says {kind}")
            check(row[1] == labels, f"{shown}: README's labels {sorted(row[1])} are /metrics' {sorted(labels)}")


def main():
    proc, port = start_demo("--max-queued-events", "4")
    try:
        text = asyncio.run(scenario(port))
        values, families = samples(text)
        print(f"scraped {len(text)} bytes, {len(families)} families")
        # Accepted: the 3 inbox clients, the campaign client, the slow consumer.
        check(value(values, "misar_handshakes_total", outcome="accepted") == 5, "5 handshakes accepted")
        check(value(values, "misar_handshakes_total", outcome="unauthorized") == 2, "2 refused: unauthorized")
        check(value(values, "misar_handshakes_total", outcome="not_found") == 1, "1 refused: not_found")
        check(value(values, "misar_closes_total", code="1000", by="server") == 1, "1 close 1000 by the server")
        check(value(values, "misar_closes_total", code="1013", by="server") == 1, "1 close 1013 by the server")
        check(value(values, "misar_queue_overflows_total") == 1, "1 queue overflow")
        check(value(values, "misar_events_published_total", channel="campaign", type="completed") == 1,
              "1 completed event published")
        check(value(values, "misar_connections_open", channel="inbox") == 3, "3 inbox connections open")
        check(value(values, "misar_connections_open", channel="campaign") == 0, "no campaign connection open")
        leaked = sorted({v for (_, labels) in values for (_, v) in labels
                         if v in SECRETS or v.startswith("msk_") or "/" in v})
        check(not leaked, f"no label value is an account, a campaign id, a key or a path: {leaked}")
        check_readme(families)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all metrics checks passed")


if __name__ == "__main__":
    main()
