// Real-browser test of who is online and of catching up, on the Redis layer:
// headless Chromium drives /chat/{room}/ against real `estuary serve`
// processes sharing the Redis at 127.0.0.1:6379 (a key prefix of their own).
//
//   cd tests/browser && npm ci && node --test
//
// ESTUARY_BIN overrides the server binary (default ../../target/debug/estuary).
// CHROMIUM_BIN overrides the browser (default /usr/bin/chromium).
// REDIS_URL overrides the Redis (default redis://127.0.0.1:6379/0).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

import { REDIS, WAIT, Server as Estuary, freePort, launchBrowser, send } from './support.mjs';

/** `estuary serve` on the shared Redis under `prefix`, ready when /healthz answers. */
class Server extends Estuary {
  constructor(port, prefix, args = []) {
    super(port, ['--layer', REDIS, '--redis-prefix', prefix, ...args], {
      readyPath: '/healthz',
      needs: `Redis at ${REDIS}`,
    });
  }
}

const statusIs = (page, state) =>
  page.waitForFunction(
    (s) => document.getElementById('status')?.dataset.state === s,
    state,
    { timeout: WAIT },
  );

/** The names the page lists as online, sorted. */
const onlineNames = (page) =>
  page.evaluate(() => [...document.querySelectorAll('#online li')].map((li) => li.dataset.username).sort());

/** Waits until the page lists exactly `names` as online. */
const onlineIs = (page, names) =>
  page.waitForFunction(
    (want) => {
      const got = [...document.querySelectorAll('#online li')].map((li) => li.dataset.username).sort();
      return JSON.stringify(got) === JSON.stringify([...want].sort()) &&
        document.getElementById('online-count').textContent === String(want.length);
    },
    names,
    { timeout: WAIT },
  );

/** The messages the log shows: text, and whether each is marked recovered. */
const shownMessages = (page) =>
  page.evaluate(() => [...document.querySelectorAll('#log > .msg')].map((el) => ({
    text: el.querySelector('.text')?.textContent,
    recovered: el.classList.contains('recovered') && !!el.querySelector('.meta .tag'),
  })));

const messageShown = (page, text) =>
  page.waitForFunction(
    (t) => [...document.querySelectorAll('#log > .msg')].some((el) => el.querySelector('.text')?.textContent === t),
    text,
    { timeout: WAIT },
  );

const logLineShown = (page, re) =>
  page.waitForFunction(
    (source) => [...document.querySelectorAll('#log > *')].some((el) => new RegExp(source).test(el.textContent)),
    re.source,
    { timeout: WAIT },
  );


describe('who is online, and catching up (Redis layer)', { timeout: 180_000 }, () => {
  const prefix = `estuarybrowser${randomUUID().replaceAll('-', '')}`;
  let a;
  let b;
  let browser;
  const notFound = [];

  /** A page whose stored name is `name`; every 404 it meets is recorded. */
  const newPage = async (name) => {
    const context = await browser.newContext();
    if (name) await context.addInitScript((n) => localStorage.setItem('estuary.username', n), name);
    const p = await context.newPage();
    p.setDefaultTimeout(WAIT);
    p.on('pageerror', (err) => { a.output += `page error: ${err.message}\n`; });
    p.on('response', (res) => { if (res.status() === 404) notFound.push(res.url()); });
    return p;
  };

  before(async () => {
    // A short leave delay, so that a page that leaves is announced soon.
    a = new Server(await freePort(), prefix, ['--leave-delay-ms', '300']);
    b = new Server(await freePort(), prefix, ['--leave-delay-ms', '300', '--push-insecure']);
    await a.start();
    await b.start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close().catch(() => {});
    for (const s of [a, b]) {
      await s?.stop().catch(() => {});
      s?.kill();
    }
  });

  test('two pages show who is online, live, across two servers', async () => {
    const ann = await newPage('ann');
    const bob = await newPage('bob');
    try {
      await ann.goto(`${a.base}/chat/online/`);
      await statusIs(ann, 'connected');
      await onlineIs(ann, ['ann']);
      assert.equal(await ann.isVisible('#empty'), true, 'the empty room says so');
      await bob.goto(`${b.base}/chat/online/`);
      await statusIs(bob, 'connected');
      await Promise.all([onlineIs(ann, ['ann', 'bob']), onlineIs(bob, ['ann', 'bob'])]);
      await ann.waitForFunction(
        () => [...document.querySelectorAll('#log > .presence')].some((el) => /bob/.test(el.textContent) && /joined/.test(el.textContent)),
        null,
        { timeout: WAIT },
      );

      // A second tab of bob is still one bob.
      const bob2 = await bob.context().newPage();
      await bob2.goto(`${a.base}/chat/online/`);
      await statusIs(bob2, 'connected');
      await onlineIs(bob2, ['ann', 'bob']);
      await bob2.close();
      assert.deepEqual(await onlineNames(ann), ['ann', 'bob']);

      const hello = `hello ${Date.now()}`;
      await send(bob, hello);
      await messageShown(ann, hello);
      assert.equal(await ann.isVisible('#empty'), false, 'no longer empty');

      await bob.context().close();
      await onlineIs(ann, ['ann']);
      await logLineShown(ann, /bob.*left the room/);
    } finally {
      await ann.context().close();
      if (!bob.isClosed()) await bob.context().close();
    }
  });

  test('a page recovers the messages sent while its server restarted', async () => {
    const p = await newPage('carol');
    try {
      await p.goto(`${a.base}/chat/deploy/`);
      await statusIs(p, 'connected');
      await send(p, 'before the deploy');
      await messageShown(p, 'before the deploy');

      await a.stop();
      await statusIs(p, 'reconnecting');
      await logLineShown(p, /Connection lost/);
      const missed = ['while away 1', 'while away 2', 'while away 3'];
      for (const text of missed) await b.post('deploy', text, 'ops');

      const restarted = new Server(a.port, prefix, ['--leave-delay-ms', '300']);
      a = restarted;
      await restarted.start();
      await statusIs(p, 'connected');
      await logLineShown(p, /Connection is back/);
      for (const text of missed) await messageShown(p, text);
      await b.post('deploy', 'live again', 'ops');
      await messageShown(p, 'live again');

      const shown = await shownMessages(p);
      assert.deepEqual(shown, [
        { text: 'before the deploy', recovered: false },
        ...missed.map((text) => ({ text, recovered: true })),
        { text: 'live again', recovered: false },
      ], 'each message once, the missed ones marked');
      assert.equal(
        await p.evaluate(() => [...document.querySelectorAll('#log > .notice')].length), 0,
        'recovery succeeded: no "could not be recovered" notice',
      );
    } finally {
      await p.context().close();
    }
  });

  test('a bad room is a page with a way back, and the icon is found', async () => {
    const p = await newPage(null);
    try {
      const res = await p.goto(`${a.base}/chat/not.a.room/`);
      assert.equal(res.status(), 404);
      assert.match(await p.textContent('h1'), /No such room/);
      await p.click('a[href="/chat/"]');
      await p.waitForURL(`${a.base}/chat/`, { timeout: WAIT });
      const icon = await fetch(`${a.base}/favicon.ico`);
      assert.equal(icon.status, 200);
      assert.match(icon.headers.get('content-type'), /^image\/svg\+xml/);
      await icon.arrayBuffer();
      const expected = notFound.filter((url) => url.endsWith('/chat/not.a.room/'));
      assert.deepEqual(notFound, expected, `only the bad room was a 404: ${notFound.join(', ')}`);
    } finally {
      await p.context().close();
    }
  });
});
