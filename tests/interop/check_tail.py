#!/usr/bin/env python3
"""Checks the `tail` example against a server that is not ours (Python `websockets`).

    python3 tests/interop/check_tail.py [path/to/tail-binary]

Default binary: target/debug/examples/tail (`cargo build -p misar-proto-tokio --example tail`).
"""
import asyncio, json, subprocess, sys
from http import HTTPStatus

import websockets
from websockets.datastructures import Headers
from websockets.http11 import Response

TAIL = sys.argv[1] if len(sys.argv) > 1 else "target/debug/examples/tail"
KEY = "msk_interop_key_1234"
failures = []
seen = []  # (path, authorization header) of every handshake


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


EVENTS = [
    '{"type":"progress","campaignId":"c1","sent":1,"total":4,"delivered":1,"bounced":0,"opened":0}',
    '{"type":"future_type","campaignId":"c1","x":[1,2]}',
    '{"type":"progress","campaignId":"c1","sent":4,"total":4,"delivered":4,"bounced":0,"opened":1}',
    '{"type":"completed","campaignId":"c1","sent":4,"delivered":4,"bounced":0,"opened":1}',
]
connections = {"flaky": 0}


def process_request(conn, request):
    seen.append((request.path, request.headers.get("Authorization")))
    if "/forbidden" in request.path:
        body = b'{"error":"forbidden","closeCode":4403,"message":"campaign not yours"}'
        return Response(403, "Forbidden", Headers({"Content-Type": "application/json",
                                                    "Content-Length": str(len(body))}), body)
    return None


async def handler(ws):
    path = ws.request.path
    if path.startswith("/mail/ws/campaigns/c1"):
        for e in EVENTS:
            await ws.send(e)
        await ws.close(1000, "campaign finished")
    elif path.startswith("/mail/ws/campaigns/revoked"):
        await ws.close(4401, "unauthorized")
    elif path.startswith("/mail/ws/inbox"):
        connections["flaky"] += 1
        n = connections["flaky"]
        await ws.send(json.dumps({"type": "email_received", "from": "a@b.c", "subject": f"conn {n}",
                                  "receivedAt": "2026-05-27T10:15:00Z"}, separators=(",", ":")))
        if n == 1:
            await ws.close(1001, "restart")
        else:
            await asyncio.sleep(30)


async def run_tail(port, path, *extra, timeout=20):
    proc = await asyncio.create_subprocess_exec(
        TAIL, "--url", f"ws://127.0.0.1:{port}{path}", "--key", KEY, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
        port = server.sockets[0].getsockname()[1]

        code, out, err = await run_tail(port, "/mail/ws/campaigns/c1", "--json")
        check(code == 0, f"campaign: exit 0 after the terminal event and close 1000 (got {code})")
        check(out.splitlines() == EVENTS, "campaign --json: every frame as one line, unknown type too, as received")
        check(seen[-1] == ("/mail/ws/campaigns/c1", f"Bearer {KEY}"), "header auth: Authorization: Bearer <key>")

        code, out, err = await run_tail(port, "/mail/ws/campaigns/c1", "--query-token")
        check(seen[-1] == (f"/mail/ws/campaigns/c1?token={KEY}", None), "--query-token: ?token=<key>, no header")
        check(code == 0 and "completed" in out, "readable mode prints the terminal event and exits 0")

        before = len(seen)
        code, out, err = await run_tail(port, "/mail/ws/campaigns/forbidden")
        check(code == 2 and len(seen) == before + 1, f"HTTP 403: exit 2, no retry (exit {code}, {len(seen) - before} attempt(s))")
        check("campaign not yours" in err or "forbidden" in err.lower(), f"403: clear message on stderr: {err.strip()[:100]!r}")
        check(KEY not in err and KEY not in out, "the key is never printed")

        before = len(seen)
        code, out, err = await run_tail(port, "/mail/ws/campaigns/revoked")
        check(code == 2 and len(seen) == before + 1, f"close 4401: exit 2, no retry (exit {code})")

        proc = await asyncio.create_subprocess_exec(
            TAIL, "--url", f"ws://127.0.0.1:{port}/mail/ws/inbox", "--key", KEY, "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        lines = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 40)) for _ in range(2)]
        check([l["subject"] for l in lines] == ["conn 1", "conn 2"], "close 1001: reconnects and keeps streaming")
        proc.send_signal(2)  # Ctrl-C
        code = await asyncio.wait_for(proc.wait(), 10)
        err = (await proc.stderr.read()).decode()
        check("reconnect" in err.lower(), f"reconnect reported on stderr: {err.strip().splitlines()[:1]}")
        check(code == 0, f"Ctrl-C: exit 0 (got {code})")

    print(f"\n{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


asyncio.run(main())
