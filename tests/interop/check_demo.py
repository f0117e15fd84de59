#!/usr/bin/env python3
"""Checks the demo server against DESIGN.md §2 with a client that is not ours.

Uses the Python `websockets` library (pip install websockets) for polite clients and a raw
socket for what a polite client never does (stay silent). Starts the demo binary itself.

    python3 tests/interop/check_demo.py [path/to/demo-binary]

Default binary: target/debug/examples/demo (build it with
`cargo build -p misar-proto-axum --example demo`).
"""
import asyncio, base64, json, os, signal, socket, struct, subprocess, sys, time, urllib.request

import websockets

import demo_fixtures
from demo_fixtures import ALICE, BOB, C_ALICE, C_BOB, check, failures, free_port
from websockets.exceptions import ConnectionClosed, InvalidStatus

DEMO = sys.argv[1] if len(sys.argv) > 1 else "target/debug/examples/demo"


def start_demo(*extra):
    return demo_fixtures.start_demo(DEMO, *extra)


def publish(port, path, event):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(event).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req) as r:
        return r.status


def email(i):
    return {"type": "email_received", "from": f"p{i}@example.com", "subject": f"s{i} é \"q\"",
            "receivedAt": "2026-05-27T10:15:00Z", "messageId": f"m-{i}"}


async def recv_json(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def polite_checks(port):
    base = f"ws://127.0.0.1:{port}/mail/ws"
    # 403 before the handshake completes, with the JSON body.
    for url, headers, code in [(f"{base}/inbox", {}, 4401),
                               (f"{base}/inbox?token=msk_wrong", {}, 4401),
                               (f"{base}/campaigns/{C_BOB}", {"Authorization": f"Bearer {ALICE}"}, 4403)]:
        try:
            async with websockets.connect(url, additional_headers=headers):
                check(False, f"refused before upgrade: {url}")
        except InvalidStatus as e:
            body = json.loads(e.response.body or b"{}")
            check(e.response.status_code == 403 and body.get("closeCode") == code,
                  f"HTTP 403 closeCode {code} before upgrade ({url.split('/mail/ws')[1]})")
    # The key in the subprotocols (§2.12): exactly `misar.v1` is echoed; without it, 400.
    async with websockets.connect(f"{base}/inbox", subprotocols=["misar.v1", f"misar.bearer.{ALICE}"]) as a_sp:
        check(a_sp.subprotocol == "misar.v1", "subprotocol auth: the 101 echoes exactly misar.v1")
        publish(port, "/dev/publish/inbox/alice", email(7))
        check(await recv_json(a_sp) == email(7), "subprotocol auth: events arrive")
    try:
        async with websockets.connect(f"{base}/inbox", subprotocols=[f"misar.bearer.{ALICE}"]):
            check(False, "a bearer subprotocol without misar.v1 is refused")
    except InvalidStatus as e:
        check(e.response.status_code == 400, "a bearer subprotocol without misar.v1: HTTP 400")
    # Both auth styles, events intact and in order, tenant isolation.
    async with websockets.connect(f"{base}/inbox", additional_headers={"Authorization": f"Bearer {ALICE}"}) as a_hdr, \
            websockets.connect(f"{base}/inbox?token={ALICE}") as a_q, \
            websockets.connect(f"{base}/inbox?token={BOB}") as b:
        sent = [email(i) for i in range(50)]
        for e in sent:
            check_status = publish(port, "/dev/publish/inbox/alice", e)
            assert check_status == 202
        publish(port, "/dev/publish/inbox/bob", email(999))
        got_hdr = [await recv_json(a_hdr) for _ in sent]
        got_q = [await recv_json(a_q) for _ in sent]
        check(got_hdr == sent, "header auth: 50 events intact and in publish order")
        check(got_q == sent, "query auth: 50 events intact and in publish order")
        raw = await asyncio.wait_for(b.recv(), 5)
        check(json.loads(raw) == email(999), "bob sees only bob's event (tenant isolation)")
        check(raw.startswith('{"type":'), "type is the first field")
    # 1000 after a campaign's terminal event.
    async with websockets.connect(f"{base}/campaigns/{C_ALICE}?token={ALICE}") as c:
        prog = {"type": "progress", "campaignId": C_ALICE, "sent": 5, "total": 10, "delivered": 5, "bounced": 0, "opened": 1}
        done = {"type": "completed", "campaignId": C_ALICE, "sent": 10, "delivered": 10, "bounced": 0, "opened": 2}
        publish(port, f"/dev/publish/campaigns/{C_ALICE}", prog)
        publish(port, f"/dev/publish/campaigns/{C_ALICE}", done)
        check(await recv_json(c) == prog, "campaign: progress received")
        check(await recv_json(c) == done, "campaign: terminal event received")
        try:
            await asyncio.wait_for(c.recv(), 5)
            check(False, "close after terminal")
        except ConnectionClosed as e:
            check(e.rcvd is not None and e.rcvd.code == 1000, f"close 1000 after the terminal event (got {e.rcvd})")


def raw_upgrade(port, path):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return s, head.split(b"\r\n")[0].decode()


def read_frame(s):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf
    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exact(8))[0]
    return b0 & 0x0F, exact(n)


def silent_client(port, interval_ms, timeout_ms):
    s, status = raw_upgrade(port, f"/mail/ws/inbox?token={ALICE}")
    check(status.startswith("HTTP/1.1 101"), "raw upgrade with ?token= accepted")
    t0 = time.monotonic()
    pings, close = [], None
    s.settimeout(10)
    try:
        while close is None:
            op, payload = read_frame(s)
            if op == 0x9:
                pings.append(time.monotonic() - t0)
            elif op == 0x8:
                close = (struct.unpack("!H", payload[:2])[0], time.monotonic() - t0)
    except (EOFError, socket.timeout):
        pass
    s.close()
    check(len(pings) >= 1 and abs(pings[0] - interval_ms / 1000) < 0.15, f"first ping after ~{interval_ms} ms (at {pings[:1]})")
    expected = (interval_ms + timeout_ms) / 1000
    check(close is not None and close[0] == 1001 and close[1] >= expected - 0.05,
          f"silent client closed 1001 after ping + timeout ≈ {expected:.2f}s (got {close})")


async def shutdown_check(proc, port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/mail/ws/inbox?token={ALICE}") as ws:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as e:
            check(e.rcvd is not None and e.rcvd.code == 1001, f"SIGINT: close 1001 (got {e.rcvd})")
    check(proc.wait(10) == 0, "demo exits 0 after SIGINT")


async def close_style_checks(port):
    base = f"ws://127.0.0.1:{port}/mail/ws"
    for url, code in [(f"{base}/inbox?token=msk_wrong", 4401), (f"{base}/campaigns/{C_BOB}?token={ALICE}", 4403)]:
        async with websockets.connect(url) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except ConnectionClosed as e:
                check(e.rcvd is not None and e.rcvd.code == code, f"--reject-style close: upgrade then {code} (got {e.rcvd})")


async def main():
    proc, port = start_demo("--ping-interval-ms", "300", "--pong-timeout-ms", "300")
    try:
        await polite_checks(port)
        silent_client(port, 300, 300)
        await shutdown_check(proc, port)
    finally:
        proc.kill()
    proc, port = start_demo("--reject-style", "close")
    try:
        await close_style_checks(port)
    finally:
        proc.kill()
    print(f"\n{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


asyncio.run(main())
