// Real-browser test of the `live` example (examples/live): a page whose
// EventSource streams a group's events over server-sent events.
//
//   cd tests/browser && npm ci && node --test
//
// LIVE_BIN overrides the example binary (default ../../target/debug/live).
// CHROMIUM_BIN overrides the browser (default /usr/bin/chromium).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser, settlesWithin } from './support.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.LIVE_BIN
  ? path.resolve(process.env.LIVE_BIN)
  : path.resolve(HERE, '../../target/debug/live');
const WAIT = 15_000; // upper bound of any single wait

/** The running example on a port of its choosing; its output is kept for failure messages. */
class Live {
  constructor() {
    this.output = '';
    this.base = null;
  }

  async start() {
    const proc = spawn(BIN, ['127.0.0.1:0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
    });
    this.proc = proc;
    this.exited = new Promise((resolve) => {
      proc.on('error', (err) => { this.output += `spawn error: ${err.message}\n`; resolve(-1); });
      proc.on('exit', (code, signal) => resolve(code ?? signal));
    });
    // It prints "listening on http://ADDR" once it accepts connections.
    const listening = new Promise((resolve) => {
      const keep = (d) => {
        this.output = (this.output + d).slice(-8000);
        const m = this.output.match(/listening on (http:\/\/[0-9.:]+)/);
        if (m) resolve(m[1]);
      };
      proc.stdout.on('data', keep);
      proc.stderr.on('data', keep);
    });
    const ok = await settlesWithin(listening.then((base) => { this.base = base; }), WAIT);
    if (!ok || !this.base) {
      await this.stop();
      throw new Error(`live did not print its address (bin ${BIN})\n${this.output}`);
    }
  }

  async post(path, body) {
    const res = await fetch(`${this.base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(WAIT),
    });
    return { status: res.status, body: await res.json().catch(() => null) };
  }

  async stats() {
    const res = await fetch(`${this.base}/stats`, { signal: AbortSignal.timeout(WAIT) });
    return res.json();
  }

  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    if (!(await settlesWithin(this.exited, 10_000))) {
      proc.kill('SIGKILL');
      await settlesWithin(this.exited, 5_000);
      throw new Error(`live ignored SIGTERM for 10 s\n${this.output}`);
    }
  }
}

describe('live page (EventSource) in Chromium', { timeout: 120_000 }, () => {
  let live;
  let browser;
  let page;

  before(async () => {
    live = new Live();
    await live.start();
    browser = await launchBrowser();
    page = await browser.newPage();
  });

  after(async () => {
    await browser?.close();
    await live?.stop();
  });

  const opensAre = (n) =>
    page.waitForFunction(
      (want) => document.body.dataset.opens === String(want) &&
        document.getElementById('status').dataset.state === 'open',
      n,
      { timeout: WAIT },
    );

  const postShown = (text) =>
    page.waitForFunction(
      (t) => [...document.querySelectorAll('#events li')].find((li) => li.textContent === t)?.dataset.id,
      text,
      { timeout: WAIT },
    ).then((handle) => handle.jsonValue());

  test('shows posts pushed after it loaded, and sends Last-Event-ID after a server-forced reconnect', async () => {
    await page.goto(`${live.base}/?topic=news`);
    await opensAre(1);
    // The stream's groups are joined before the page reports it open.
    assert.equal((await live.stats()).open, 1);

    for (const text of ['first', 'second']) {
      const pushed = await live.post('/publish/news', { text });
      assert.deepEqual(pushed, { status: 202, body: { delivered: 1, dropped: 0 } });
    }
    await postShown('first');
    const lastId = await postShown('second');
    assert.ok(lastId, 'the event carried an id');

    // Another topic does not reach this page.
    assert.equal((await live.post('/publish/sports', { text: 'elsewhere' })).body.delivered, 0);

    // The server ends every stream; the browser reconnects by itself.
    assert.equal((await live.post('/reconnect', {})).status, 202);
    await opensAre(2);
    const notice = await page.waitForFunction(
      () => document.querySelector('#notices li')?.dataset.notice,
      null,
      { timeout: WAIT },
    ).then((h) => h.jsonValue());
    // What the server saw in the reconnecting request's Last-Event-ID.
    assert.deepEqual(JSON.parse(notice), {
      type: 'estuary.missed',
      reason: 'reconnect',
      last_event_id: lastId,
      known_missed: 0,
    });
    const stats = await live.stats();
    assert.equal(stats.resumed, 1);
    assert.equal(stats.open, 1);

    // Posts reach the reconnected stream.
    assert.equal((await live.post('/publish/news', { text: 'third' })).body.delivered, 1);
    await postShown('third');
    const shown = await page.$$eval('#events li', (lis) => lis.map((li) => li.textContent));
    assert.deepEqual(shown, ['first', 'second', 'third']);
  });
});
