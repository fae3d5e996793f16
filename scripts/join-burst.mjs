// Another room's latency while a crowd joins one room with names (issue 16, item 9).
//
//   node --experimental-websocket scripts/join-burst.mjs [--bin target/release/estuary]
//        [--joins 3000] [--in-flight 200] [--senders 5] [--every-ms 100] [--anonymous]
//
// Starts `estuary serve` on a free port with the per-address limits off, then:
// --senders senders in room "quiet" each send a message every --every-ms (under
// the server's 20 messages/s per connection) and time its echo (the round trip); first alone for 3 s (baseline), then while --joins
// connections join room "crowd" with ?username= (at most --in-flight handshakes
// at a time), until every joiner is in and the announcements have stopped for
// a second; then the joiners all leave. Prints the round trip's p50/p99/max per
// phase, the server's CPU seconds per phase (utime+stime from /proc), and the
// announcement frames the crowd received.
// Node 20 needs --experimental-websocket; Node 22+ has WebSocket built in.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const BIN = path.resolve(arg('bin', path.join(HERE, '../target/release/estuary')));
const JOINS = Number(arg('joins', 3000));
const IN_FLIGHT = Number(arg('in-flight', 200));
const EVERY_MS = Number(arg('every-ms', 100));
const SENDERS = Number(arg('senders', 5));
// --anonymous: the crowd joins without names (the cost of the handshakes alone).
const NAMED = !process.argv.includes('--anonymous');
const TICK = 100; // /proc/<pid>/stat clock ticks per second on Linux

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICK; // utime, stime
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function open(url, onMessage) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => reject(new Error(`no open in 30 s: ${url}`)), 30_000);
    ws.onopen = () => { clearTimeout(timer); resolve(ws); };
    ws.onerror = () => { clearTimeout(timer); reject(new Error(`failed: ${url}`)); };
    ws.onmessage = onMessage;
  });
}


// The senders run on their own thread, so that the crowd's frames (millions
// before the fix) do not delay their event loop and the round trip measures
// the server.
if (!isMainThread) {
  const { base: wsBase, senders: n, everyMs } = workerData;
  const sent = new Map();
  let samples = [];
  let closed = 0;
  for (let s = 0; s < n; s++) {
    const sender = await open(`${wsBase}/quiet/`, (e) => {
      const ev = JSON.parse(e.data);
      if (ev.type !== 'chat_message' || !ev.message.startsWith(`s${s}:`)) return;
      const t0 = sent.get(ev.message);
      if (t0 !== undefined) { samples.push(performance.now() - t0); sent.delete(ev.message); }
    });
    sender.onclose = (e) => { closed++; console.error(`sender ${s} closed: ${e.code} ${e.reason}`); };
    let seq = 0;
    await delay(everyMs / n);
    setInterval(() => {
      const text = `s${s}:${seq++}`;
      sent.set(text, performance.now());
      sender.send(JSON.stringify({ message: text }));
    }, everyMs);
  }
  parentPort.on('message', (m) => {
    if (m === 'reset') samples = [];
    if (m === 'take') {
      const lost = [...sent.values()].filter((t) => performance.now() - t > 5000).length;
      parentPort.postMessage({ samples, lost, closed });
      samples = [];
    }
  });
  parentPort.postMessage('ready');
} else {
const port = await freePort();
const server = spawn(BIN, [
  'serve', '--bind', `127.0.0.1:${port}`,
  '--max-connections-per-ip', '0', '--handshake-rate', '0', '--rate-limit-per-ip', '0',
], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
let serverLog = '';
server.stderr.on('data', (d) => { serverLog = (serverLog + d).slice(-4000); });
const base = `ws://127.0.0.1:${port}/ws/chat`;
for (let i = 0; ; i++) {
  try { await open(`${base}/probe/`, () => {}).then((ws) => ws.close()); break; } catch (e) {
    if (i > 100) throw new Error(`the server did not start\n${serverLog}`);
    await delay(100);
  }
}

const worker = new Worker(fileURLToPath(import.meta.url), {
  workerData: { base, senders: SENDERS, everyMs: EVERY_MS },
});
await new Promise((resolve) => worker.once('message', resolve));
const take = () => new Promise((resolve) => { worker.once('message', resolve); worker.postMessage('take'); });

const phases = [];
async function phase(name, body) {
  worker.postMessage('reset');
  const cpu0 = cpuSeconds(server.pid);
  const t0 = performance.now();
  const extra = await body();
  const secs = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(server.pid) - cpu0;
  const { samples, lost, closed: senderClosed } = await take();
  const sorted = [...samples].sort((a, b) => a - b);
  phases.push({
    phase: name, seconds: +secs.toFixed(2), server_cpu_s: +cpu.toFixed(2), rtt_n: sorted.length,
    rtt_p50_ms: +percentile(sorted, 50).toFixed(1), rtt_p99_ms: +percentile(sorted, 99).toFixed(1),
    rtt_max_ms: +(sorted.at(-1) ?? NaN).toFixed(1), unanswered_over_5s: lost, senders_closed: senderClosed, ...extra,
  });
}

// Announcement frames the crowd receives, and when the last one came.
let frames = 0;
let lastFrame = performance.now();
const onCrowd = (e) => {
  if (e.data.startsWith('{"type":"user_')) { frames++; lastFrame = performance.now(); }
};
async function quietFor(ms) {
  while (performance.now() - lastFrame < ms) await delay(50);
}

await phase('baseline', async () => { await delay(3000); return {}; });

const crowd = [];
await phase(`join ${JOINS}${NAMED ? ' named' : ' anonymous'}`, async () => {
  frames = 0;
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < JOINS) {
      const i = next++;
      try { crowd.push(await open(`${base}/crowd/${NAMED ? `?username=m${i}` : ''}`, onCrowd)); } catch { failed++; }
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  await quietFor(1000);
  return { joined: crowd.length, failed, announcement_frames: frames };
});

await phase(`leave ${JOINS}`, async () => {
  frames = 0;
  const closed = crowd.map((ws) => new Promise((resolve) => {
    ws.onclose = resolve;
    ws.close();
  }));
  await Promise.all(closed);
  await quietFor(1000);
  return {};
});

await worker.terminate();
server.kill('SIGTERM');
console.log(JSON.stringify({ bin: BIN, joins: JOINS, in_flight: IN_FLIGHT, senders: SENDERS, every_ms: EVERY_MS }));
for (const p of phases) console.log(JSON.stringify(p));
process.exit(0);
}
