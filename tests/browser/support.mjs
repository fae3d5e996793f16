// What the browser tests share: the binaries, a free port, a bounded wait,
// `estuary serve` as a child process, and headless Chromium.
//
// ESTUARY_BIN overrides the server binary (default ../../target/debug/estuary).
// CHROMIUM_BIN overrides the browser (default /usr/bin/chromium).
// REDIS_URL overrides the Redis of the tests that need one (default redis://127.0.0.1:6379/0).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.ESTUARY_BIN
  ? path.resolve(process.env.ESTUARY_BIN)
  : path.resolve(HERE, '../../target/debug/estuary');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const REDIS = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';
export const WAIT = 15_000; // upper bound of any single wait in the browser

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** True when `promise` settles within `ms`; the timer never outlives the wait. */
export async function settlesWithin(promise, ms) {
  const ac = new AbortController();
  const timer = delay(ms, false, { signal: ac.signal }).catch(() => false);
  try {
    return await Promise.race([promise.then(() => true), timer]);
  } finally {
    ac.abort();
  }
}

/**
 * A running `estuary serve` with `args`; ready once `readyPath` answers 200.
 * Its output is kept (not printed) for failure messages.
 */
export class Server {
  constructor(port, args = [], { readyPath = '/chat/', needs = '' } = {}) {
    this.port = port;
    this.args = args;
    this.readyPath = readyPath;
    this.needs = needs;
    this.base = `http://127.0.0.1:${port}`;
    this.output = '';
    this.proc = null;
    this.exited = null;
  }

  async start() {
    const proc = spawn(BIN, ['serve', '--bind', `127.0.0.1:${this.port}`, ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
    });
    this.proc = proc;
    const keep = (d) => { this.output = (this.output + d).slice(-8000); };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    this.exited = new Promise((resolve) => {
      proc.on('error', (err) => { keep(`spawn error: ${err.message}\n`); resolve(-1); });
      proc.on('exit', (code, signal) => resolve(code ?? signal));
    });
    let gone = false;
    this.exited.then(() => { gone = true; });

    // The server announces nothing machine-readable: ask a bounded number of
    // times, and fail early if the process dies.
    for (let i = 0; i < 150; i++) {
      if (gone) break;
      try {
        const res = await fetch(`${this.base}${this.readyPath}`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.ok) return;
      } catch { /* not listening yet */ }
      await delay(100);
    }
    await this.stop();
    throw new Error(`estuary did not answer GET ${this.readyPath} on port ${this.port} (bin ${BIN}` +
      `${this.needs ? `; this test needs ${this.needs}` : ''})\n${this.output}`);
  }

  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    if (!(await settlesWithin(this.exited, 10_000))) {
      proc.kill('SIGKILL');
      await settlesWithin(this.exited, 5_000);
      throw new Error(`estuary ignored SIGTERM for 10 s\n${this.output}`);
    }
  }

  kill() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }

  /** `POST /api/rooms/{room}/messages` (the server must run with --push-insecure). */
  async post(room, message, username) {
    const res = await fetch(`${this.base}/api/rooms/${room}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ message, username }),
      signal: AbortSignal.timeout(WAIT),
    });
    const body = await res.text();
    assert.equal(res.status, 202, body);
    return JSON.parse(body);
  }
}

/** Headless Debian Chromium, as the machine runs it. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    timeout: 60_000,
  });
}

/** Types `text` into the room page and sends it. */
export async function send(page, text) {
  await page.waitForSelector('#send:not([disabled])', { timeout: WAIT });
  await page.fill('#message', text);
  await page.press('#message', 'Enter');
}
