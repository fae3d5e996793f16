// Real-browser test of Estuary's chat pages: headless Chromium drives /chat/ and
// /chat/{room}/ against a real `estuary serve` process.
//
//   cd tests/browser && npm ci && node --test
//
// ESTUARY_BIN overrides the server binary (default ../../target/debug/estuary).
// CHROMIUM_BIN overrides the browser (default /usr/bin/chromium).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { WAIT, Server, freePort, launchBrowser, send } from './support.mjs';

const statusIs = (page, state) =>
  page.waitForFunction(
    (s) => document.getElementById('status')?.dataset.state === s &&
      document.getElementById('status').textContent.trim() === s,
    state,
    { timeout: WAIT },
  );

/** Waits until #log holds a .msg with this text and username. */
const messageShown = (page, text, user) =>
  page.waitForFunction(
    ([t, u]) => [...document.querySelectorAll('#log > .msg')].some(
      (el) => el.querySelector('.text')?.textContent === t &&
        el.querySelector('.user')?.textContent === u,
    ),
    [text, user],
    { timeout: WAIT },
  );


/**
 * A room page written the way the Django Channels tutorial writes one: the room
 * name comes from a json_script-style element, every frame's `message` is
 * appended to a textarea, and a click sends {"message": ...}. It knows nothing
 * of Estuary (no `type`, no `username`, no reconnecting).
 */
const tutorialRoomPage = (room) => `<!doctype html>
<html>
<head>
  <meta charset="utf-8">
  <title>Chat room</title>
</head>
<body>
  <textarea id="chat-log" cols="100" rows="20"></textarea><br>
  <input id="chat-message-input" type="text" size="100"><br>
  <input id="chat-message-submit" type="button" value="Send">
  <script id="room-name" type="application/json">${JSON.stringify(room)}</script>
  <script>
    const roomName = JSON.parse(document.getElementById('room-name').textContent);

    const chatSocket = new WebSocket(
      'ws://' + window.location.host + '/ws/chat/' + roomName + '/'
    );

    chatSocket.onmessage = function (e) {
      const data = JSON.parse(e.data);
      document.querySelector('#chat-log').value += (data.message + '\\n');
    };

    chatSocket.onclose = function (e) {
      console.error('Chat socket closed unexpectedly');
    };

    const input = document.querySelector('#chat-message-input');
    input.focus();
    input.onkeyup = function (e) {
      if (e.key === 'Enter') {
        document.querySelector('#chat-message-submit').click();
      }
    };

    document.querySelector('#chat-message-submit').onclick = function (e) {
      const message = input.value;
      chatSocket.send(JSON.stringify({ 'message': message }));
      input.value = '';
    };
  </script>
</body>
</html>
`;

/** Waits until the tutorial page's #chat-log has a line equal to `text`. */
const tutorialLogHas = (page, text) =>
  page.waitForFunction(
    (t) => document.getElementById('chat-log').value.split('\n').includes(t),
    text,
    { timeout: WAIT },
  );

describe('chat pages in Chromium', { timeout: 120_000 }, () => {
  let server;
  let browser;
  let a;
  let b;

  before(async () => {
    server = new Server(await freePort());
    await server.start();
    browser = await launchBrowser();
    // One context per user, so localStorage (the stored name) is not shared.
    a = await (await browser.newContext()).newPage();
    b = await (await browser.newContext()).newPage();
    for (const p of [a, b]) {
      p.setDefaultTimeout(WAIT);
      p.on('pageerror', (err) => { server.output += `page error: ${err.message}\n`; });
    }
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.stop().catch(() => {});
    if (server?.proc && server.proc.exitCode === null && server.proc.signalCode === null) {
      server.proc.kill('SIGKILL');
    }
  });

  test('two pages in one room see each other\'s messages', async () => {
    await a.goto(`${server.base}/chat/lobby/`);
    await b.goto(`${server.base}/chat/lobby/`);
    await Promise.all([statusIs(a, 'connected'), statusIs(b, 'connected')]);

    await a.fill('#username', 'alice');
    const text = `hello from alice ${Date.now()}`;
    await send(a, text);

    await messageShown(b, text, 'alice');
    await messageShown(a, text, 'alice');
    assert.equal(await a.inputValue('#message'), '', 'the input is cleared after sending');
    assert.equal(await a.evaluate(() => localStorage.getItem('estuary.username')), 'alice');

    // Markup in a message is shown as text, never parsed.
    const markup = '<img src=x onerror="window.__pwned=1"><b>bold</b>';
    await send(b, markup);
    await messageShown(a, markup, 'Anonymous');
    assert.equal(await a.evaluate(() => window.__pwned), undefined);
    assert.equal(await a.locator('#log b').count(), 0);
  });

  test('the picker lists the room with its member count and rejects bad names', async () => {
    const p = await (await browser.newContext()).newPage();
    p.setDefaultTimeout(WAIT);
    try {
      await p.goto(`${server.base}/chat/`);
      await p.waitForFunction(
        () => {
          const li = document.querySelector('#rooms li[data-room="lobby"]');
          return li && li.dataset.members === '2' &&
            li.querySelector('a')?.getAttribute('href') === '/chat/lobby/' &&
            /^2\b/.test(li.querySelector('.count')?.textContent ?? '');
        },
        null,
        { timeout: WAIT },
      );

      await p.fill('#room-name', 'not a room!');
      await p.press('#room-name', 'Enter');
      await p.waitForSelector('#room-error:not([hidden])', { timeout: WAIT });
      assert.match(await p.textContent('#room-error'), /\S/);
      assert.equal(new URL(p.url()).pathname, '/chat/');

      await p.fill('#room-name', 'side_room-2');
      await p.click('#room-form button[type="submit"]');
      await p.waitForURL(`${server.base}/chat/side_room-2/`, { timeout: WAIT });
      await statusIs(p, 'connected');
    } finally {
      await p.context().close();
    }
  });

  test('pages reconnect after the server restarts on the same port', async () => {
    await server.stop();
    await Promise.all([statusIs(a, 'reconnecting'), statusIs(b, 'reconnecting')]);
    await a.waitForFunction(() => /retrying in/.test(document.body.textContent), null, { timeout: WAIT });
    assert.equal(await a.isDisabled('#send'), true, 'send is disabled while disconnected');

    const restarted = new Server(server.port);
    server = restarted;
    await restarted.start();
    await Promise.all([statusIs(a, 'connected'), statusIs(b, 'connected')]);

    const text = `after restart ${Date.now()}`;
    await send(a, text);
    await messageShown(b, text, 'alice');
    await messageShown(a, text, 'alice');
  });

  test('a page written for the Django Channels tutorial works unchanged', async () => {
    // A fulfilled response has no IP address space, so Chromium's Local Network
    // Access checks treat the tutorial page as public and would block its
    // WebSocket to 127.0.0.1 (ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS); the
    // server's own pages come from loopback and need no such grant.
    const tut = await (await browser.newContext({ permissions: ['local-network-access'] })).newPage();
    const est = await (await browser.newContext()).newPage();
    try {
      for (const p of [tut, est]) {
        p.setDefaultTimeout(WAIT);
        p.on('pageerror', (err) => { server.output += `page error: ${err.message}\n`; });
      }
      // Served as if from the server itself, so the WebSocket's Origin is the
      // server's own host; the server has no /tutorial/ route of its own.
      const tutorialUrl = `${server.base}/tutorial/lobby/`;
      await tut.route(tutorialUrl, (route) =>
        route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: tutorialRoomPage('lobby') }));

      await est.goto(`${server.base}/chat/lobby/`);
      await statusIs(est, 'connected');
      await tut.goto(tutorialUrl);
      // The tutorial page has no status of its own; its socket being open is the
      // signal (the server joins the room group before it accepts).
      await tut.waitForFunction(() => chatSocket.readyState === WebSocket.OPEN, null, { timeout: WAIT });

      // Tutorial page -> Estuary page (no username sent, so "Anonymous").
      const fromTutorial = `from the tutorial page ${Date.now()}`;
      await tut.fill('#chat-message-input', fromTutorial);
      await tut.click('#chat-message-submit');
      await messageShown(est, fromTutorial, 'Anonymous');
      await tutorialLogHas(tut, fromTutorial); // the sender gets its own message too
      assert.equal(await tut.inputValue('#chat-message-input'), '');

      // Estuary page -> tutorial page.
      await est.fill('#username', 'carol');
      const fromEstuary = `from the estuary page ${Date.now()}`;
      await send(est, fromEstuary);
      await messageShown(est, fromEstuary, 'carol');
      await tutorialLogHas(tut, fromEstuary);

      // Every frame the tutorial page got carried a `message` it could show.
      const lines = (await tut.inputValue('#chat-log')).split('\n');
      assert.ok(!lines.includes('undefined'), `a frame without "message" reached the tutorial page:\n${lines.join('\n')}`);
      assert.equal(await tut.evaluate(() => chatSocket.readyState), 1, 'the tutorial socket is still open');
    } finally {
      await tut.context().close();
      await est.context().close();
    }
  });
});

describe('chat pages refused by the application', { timeout: 120_000 }, () => {
  let app;
  let asked = 0;
  let server;
  let browser;

  before(async () => {
    // The application's connect callback: every visitor is refused with
    // 4403, as the documented Django view refuses anonymous ones.
    app = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        asked += 1;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ reject: { close_code: 4403, reason: 'log in first' } }));
      });
    });
    await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
    const callback = `http://127.0.0.1:${app.address().port}/estuary/connect/`;
    server = new Server(await freePort(), [
      '--callback-url', callback, '--callback-secret', 'the browser test callback secret',
    ]);
    await server.start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.stop().catch(() => {});
    await new Promise((resolve) => app?.close(resolve) ?? resolve());
  });

  test('the page shows the refusal and stops instead of retrying', async () => {
    const p = await (await browser.newContext()).newPage();
    p.setDefaultTimeout(WAIT);
    p.on('pageerror', (err) => { server.output += `page error: ${err.message}\n`; });
    try {
      await p.goto(`${server.base}/chat/lobby/`);
      await statusIs(p, 'closed');
      await p.waitForFunction(
        () => [...document.querySelectorAll('#log > *')].some((el) => el.textContent.includes('log in first (4403)')),
        null,
        { timeout: WAIT },
      );
      assert.equal((await p.textContent('#retry')).trim(), '', 'no retry is scheduled');
      assert.equal(await p.isDisabled('#send'), true);
      assert.equal(asked, 1, 'the application was asked once');
    } finally {
      await p.context().close();
    }
  });
});

describe('signed-in members and guests', { timeout: 120_000 }, () => {
  // The application's connect callback: the visitor whose session cookie is
  // "alice-session" is alice; everyone else is a guest.
  let app;
  let server;
  let browser;

  before(async () => {
    app = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        let signedIn = false;
        try { signedIn = JSON.parse(body).cookies?.sessionid === 'alice-session'; } catch { /* a guest */ }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(signedIn ? { user: { id: '1', name: 'alice' } } : {}));
      });
    });
    await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
    server = new Server(await freePort(), [
      '--callback-url', `http://127.0.0.1:${app.address().port}/estuary/connect/`,
      '--callback-secret', 'the browser test callback secret',
    ]);
    await server.start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.stop().catch(() => {});
    await new Promise((resolve) => app?.close(resolve) ?? resolve());
  });

  /** The badge of the .msg with this text: "verified", "guest", or null. */
  const badgeOf = (page, text) =>
    page.evaluate((t) => {
      const msg = [...document.querySelectorAll('#log > .msg')]
        .find((el) => el.querySelector('.text')?.textContent === t);
      const badge = msg?.querySelector('.meta .badge');
      if (!badge) return null;
      return { kind: badge.classList.contains('verified') ? 'verified' : 'guest', data: msg.dataset.verified };
    }, text);

  test('a signed-in alice wears the signed-in badge and a guest called alice does not', async () => {
    const newPage = async (cookie) => {
      const context = await browser.newContext();
      if (cookie) await context.addCookies([{ name: 'sessionid', value: cookie, url: server.base }]);
      const p = await context.newPage();
      p.setDefaultTimeout(WAIT);
      p.on('pageerror', (err) => { server.output += `page error: ${err.message}\n`; });
      return p;
    };
    const watcher = await newPage(null);
    const guest = await newPage(null);
    const alice = await newPage('alice-session');
    try {
      await watcher.goto(`${server.base}/chat/ident/`);
      await guest.goto(`${server.base}/chat/ident/`);
      await Promise.all([statusIs(watcher, 'connected'), statusIs(guest, 'connected')]);

      // Before the real alice arrives, a guest may call itself alice: shown as a guest.
      await guest.fill('#username', 'alice');
      const fromGuest = `guest as alice ${Date.now()}`;
      await send(guest, fromGuest);
      await messageShown(watcher, fromGuest, 'alice');
      assert.deepEqual(await badgeOf(watcher, fromGuest), { kind: 'guest', data: 'false' });

      // The signed-in alice (her session cookie, checked by the application).
      await alice.goto(`${server.base}/chat/ident/`);
      await statusIs(alice, 'connected');
      await watcher.waitForFunction(
        () => [...document.querySelectorAll('#log > .presence')].some(
          (el) => el.querySelector('.user')?.textContent === 'alice' && el.querySelector('.badge.verified')),
        null,
        { timeout: WAIT },
      );
      const fromAlice = `the real alice ${Date.now()}`;
      await send(alice, fromAlice);
      await messageShown(watcher, fromAlice, 'alice');
      assert.deepEqual(await badgeOf(watcher, fromAlice), { kind: 'verified', data: 'true' });
      assert.deepEqual(await badgeOf(watcher, fromGuest), { kind: 'guest', data: 'false' }, 'the guest stays a guest');

      // Now the guest can no longer write as alice: the page shows why.
      const again = `guest again ${Date.now()}`;
      await send(guest, again);
      await guest.waitForFunction(
        () => [...document.querySelectorAll('#log > .error')].some((el) => /signed-in member/.test(el.textContent)),
        null,
        { timeout: WAIT },
      );
      assert.equal(await badgeOf(watcher, again), null, 'the refused message reached nobody');
    } finally {
      for (const p of [watcher, guest, alice]) await p.context().close();
    }
  });
});
