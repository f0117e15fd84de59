// Benchmark peer: a Node.js `ws` server written the way the ws README shows it.
//
// Speaks the benchmark control API (bench/README.md), like every server under test:
//   GET  /mail/ws/inbox?token=...            WebSocket upgrade; the token is not checked
//   POST /bench/broadcast?count=K&size=S     publish K events of about S bytes back to back
//   GET  /bench/stats                        {"connections": N}
// Environment: BENCH_HOST (127.0.0.1), BENCH_PORT (9000), BENCH_PING_MS (30000).
//
// Fairness notes: the README's heartbeat (one interval sweeping every client, a ping each, an
// unanswered previous ping closes the socket, with 1001 here as the wire contract says) and
// the README's broadcast loop, handing each client the same Buffer so the payload is encoded
// once. ws's own defaults otherwise (permessage-deflate is off by default on the server).
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { WebSocketServer, WebSocket } from 'ws';

const INBOX_PATH = '/mail/ws/inbox';
const MAX_BROADCAST_COUNT = 1_000_000;
const MAX_EVENT_SIZE = 1 << 20;

const host = process.env.BENCH_HOST ?? '127.0.0.1';
const port = Number(process.env.BENCH_PORT ?? 9000);
const pingMs = Math.max(1, Number(process.env.BENCH_PING_MS ?? 30000));

// Wall clock in nanoseconds since the Unix epoch, as a decimal string. Date.now() has only
// millisecond resolution, which would bias every latency by up to a millisecond; timeOrigin +
// now() is the high-resolution clock anchored to the epoch. Split in whole milliseconds and the
// rest so the arithmetic stays exact in BigInt.
function unixNowNs() {
  const ms = performance.timeOrigin + performance.now();
  const whole = Math.floor(ms);
  return (BigInt(whole) * 1_000_000n + BigInt(Math.round((ms - whole) * 1e6))).toString();
}

const FRAME_HEAD = '{"type":"email_received","from":"bench@example.com","subject":"';

// The same frame as misar_tests::bench::event_frame: an email_received event whose messageId
// carries bench-<seq>-<sentAtNs>, padded in the subject to `size` bytes.
function eventFrame(seq, sentAtNs, size) {
  const tail = `","receivedAt":"2026-05-27T10:15:00Z","messageId":"bench-${seq}-${sentAtNs}"}`;
  const pad = Math.max(0, size - FRAME_HEAD.length - tail.length);
  return FRAME_HEAD + 'x'.repeat(pad) + tail;
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

let seq = 0;

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://bench');
  if (req.method === 'POST' && url.pathname === '/bench/broadcast') {
    const count = Number(url.searchParams.get('count') ?? 100);
    const size = Number(url.searchParams.get('size') ?? 200);
    if (!Number.isInteger(count) || !Number.isInteger(size) || count < 0 || size < 0
        || count > MAX_BROADCAST_COUNT || size > MAX_EVENT_SIZE) {
      sendJson(res, 400, { error: 'count or size out of range' });
      return;
    }
    const recipients = wss.clients.size;
    for (let i = 0; i < count; i++) {
      const frame = Buffer.from(eventFrame(seq++, unixNowNs(), size));
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) {
          client.send(frame, { binary: false });
        }
      }
    }
    sendJson(res, 200, { published: count, recipients });
  } else if (req.method === 'GET' && url.pathname === '/bench/stats') {
    sendJson(res, 200, { connections: wss.clients.size });
  } else {
    sendJson(res, 404, { error: 'not found' });
  }
});

const wss = new WebSocketServer({ server, path: INBOX_PATH });

wss.on('connection', (ws) => {
  ws.isAlive = true;
  ws.on('pong', () => {
    ws.isAlive = true;
  });
  // A reset by the load generator is expected; without a listener it would crash the process.
  ws.on('error', () => {});
});

const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) {
      ws.close(1001, 'heartbeat timeout');
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, pingMs);

wss.on('close', () => clearInterval(heartbeat));

server.listen(port, host, () => {
  console.error(`node-ws listening on ${host}:${port}, ping every ${pingMs} ms`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
