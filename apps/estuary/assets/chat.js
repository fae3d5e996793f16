// Room page: one WebSocket to /ws/chat/{room}/, reconnecting with backoff (but not
// after an application close code, 4000-4999: signed out, refused).
// All user-supplied text goes into the page through textContent only.
// Whether a name is signed in comes from the frame's "verified" field and is
// shown as a badge element (signed in, or guest), never as text a guest could type.
// Who is online: the "presence" frame (asked for with ?presence=1), then the
// user_join and user_leave frames. Catching up (docs/CHAT.md): the page keeps
// the position below which it received every message, and reconnects with
// ?since= to get what it missed (marked recovered), or is told it cannot.
(function () {
  "use strict";

  var NAME_KEY = "estuary.username";
  var BACKOFF_START_MS = 500;
  var BACKOFF_CAP_MS = 5000;
  var JITTER = 0.1; // +/- 10 %
  var MAX_LOG = 500; // children kept in the log
  var GAP_MS = 3000; // a gap in the positions older than this is skipped on reconnect

  var $ = function (id) { return document.getElementById(id); };
  var statusEl = $("status");
  var retryEl = $("retry");
  var log = $("log");
  var form = $("chat-form");
  var nameInput = $("username");
  var msgInput = $("message");
  var sendBtn = $("send");
  var onlineList = $("online");
  var onlineCount = $("online-count");
  var onlineEmpty = $("online-empty");
  var emptyNote = $("empty");

  var m = /^\/chat\/([^/]+)\/?$/.exec(location.pathname);
  var room = m ? decodeURIComponent(m[1]) : "";
  $("room-title").textContent = "#" + room;
  document.title = "#" + room + " · Estuary";

  // ---- username -------------------------------------------------------
  function loadName() {
    try { return localStorage.getItem(NAME_KEY) || ""; } catch (e) { return ""; }
  }
  function saveName(v) {
    try {
      if (v) localStorage.setItem(NAME_KEY, v); else localStorage.removeItem(NAME_KEY);
    } catch (e) { /* storage unavailable: keep the name for this page only */ }
  }
  function currentName() { return nameInput.value.trim().slice(0, 50); }
  nameInput.value = loadName();
  nameInput.addEventListener("input", function () { saveName(currentName()); });
  // The server refused the name (close 4400 or 4409): joining again waits
  // for another one.
  var nameRefused = false;
  nameInput.addEventListener("change", function () {
    if (nameRefused && !ws) {
      nameRefused = false;
      attempt = 0;
      connect();
    }
  });

  // ---- log ------------------------------------------------------------
  var seenIds = new Set();

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  }
  function append(el) {
    var stick = nearBottom();
    log.append(el);
    while (log.childElementCount > MAX_LOG) log.firstElementChild.remove();
    if (stick) log.scrollTop = log.scrollHeight;
  }
  function line(cls, text) {
    var div = document.createElement("div");
    div.className = cls;
    div.textContent = text;
    append(div);
    return div;
  }
  // The name as the page shows it: the text, then a badge saying whether the
  // server vouches for it ("verified": true) or it is a guest's choice.
  function nameEl(username, verified) {
    var wrap = document.createElement("span");
    wrap.className = "who";
    var user = document.createElement("span");
    user.className = "user" + (verified ? " verified" : " guest");
    user.textContent = username;
    var badge = document.createElement("span");
    badge.className = "badge " + (verified ? "verified" : "guest");
    badge.textContent = verified ? "signed in" : "guest";
    badge.title = verified ? "Signed in: the server checked who this is"
      : "Not signed in: anyone can choose this name";
    wrap.append(user, badge);
    return wrap;
  }
  // A user_join or user_leave frame: "users" names several members, else "username".
  var MAX_NAMES_SHOWN = 20;
  function presence(ev, verb) {
    var users = Array.isArray(ev.users) && ev.users.length
      ? ev.users
      : [{ username: ev.username, verified: ev.verified }];
    var div = document.createElement("div");
    div.className = "presence";
    users.slice(0, MAX_NAMES_SHOWN).forEach(function (u, i) {
      if (i > 0) div.append(", ");
      var name = u && typeof u.username === "string" && u.username ? u.username : "Someone";
      div.append(nameEl(name, !!u && u.verified === true));
    });
    if (users.length > MAX_NAMES_SHOWN) div.append(" and " + (users.length - MAX_NAMES_SHOWN) + " others");
    div.append(" " + verb + " the room");
    append(div);
  }
  function fmtTime(ts) {
    var d = new Date(typeof ts === "number" ? ts : Date.now());
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function showMessage(ev) {
    if (ev.id != null) {
      var key = String(ev.id);
      if (seenIds.has(key)) return; // history replayed after a reconnect
      seenIds.add(key);
    }
    if (emptyNote) { emptyNote.remove(); emptyNote = null; }
    var username = typeof ev.username === "string" && ev.username ? ev.username : "Anonymous";
    var div = document.createElement("div");
    div.className = "msg" + (ev.history ? " history" : "") + (ev.recovered ? " recovered" : "") +
      (username === (currentName() || "Anonymous") ? " own" : "");
    if (ev.id != null) div.dataset.id = String(ev.id);
    var head = document.createElement("div");
    head.className = "meta";
    div.dataset.verified = ev.verified === true ? "true" : "false";
    var user = nameEl(username, ev.verified === true);
    var time = document.createElement("time");
    time.className = "ts";
    if (typeof ev.ts === "number") time.dateTime = new Date(ev.ts).toISOString();
    time.textContent = fmtTime(ev.ts);
    head.append(user, time);
    if (ev.recovered) {
      var mark = document.createElement("span");
      mark.className = "tag";
      mark.textContent = "recovered";
      mark.title = "Sent while this page was disconnected";
      head.append(mark);
    }
    var body = document.createElement("div");
    body.className = "text";
    body.textContent = String(ev.message);
    div.append(head, body);
    append(div);
  }

  // ---- who is online --------------------------------------------------
  // Keyed by name and badge: a guest and a signed-in member of one name are two.
  var online = new Map();
  var onlineTotal = 0; // named members present, beyond those listed too
  function onlineKey(u) { return (u.verified === true ? "v:" : "g:") + u.username; }
  function namedUsers(list) {
    return (Array.isArray(list) ? list : []).filter(function (u) {
      return u && typeof u.username === "string" && u.username;
    });
  }
  function noticeUsers(ev) {
    return namedUsers(Array.isArray(ev.users) && ev.users.length
      ? ev.users : [{ username: ev.username, verified: ev.verified }]);
  }
  function renderOnline() {
    var items = Array.from(online.values())
      .sort(function (a, b) { return a.username < b.username ? -1 : a.username > b.username ? 1 : 0; })
      .map(function (u) {
        var li = document.createElement("li");
        li.dataset.username = u.username;
        li.dataset.verified = u.verified === true ? "true" : "false";
        li.append(nameEl(u.username, u.verified === true));
        return li;
      });
    onlineList.replaceChildren.apply(onlineList, items);
    var total = Math.max(onlineTotal, online.size);
    onlineCount.textContent = String(total);
    onlineEmpty.hidden = total > 0;
  }
  function setOnline(ev) {
    online.clear();
    namedUsers(ev.users).forEach(function (u) { online.set(onlineKey(u), u); });
    onlineTotal = typeof ev.count === "number" ? ev.count : online.size;
    renderOnline();
  }
  function joined(ev) {
    noticeUsers(ev).forEach(function (u) {
      var key = onlineKey(u);
      if (!online.has(key)) { online.set(key, u); onlineTotal += 1; }
    });
    renderOnline();
  }
  function left(ev) {
    noticeUsers(ev).forEach(function (u) {
      if (online.delete(onlineKey(u)) || onlineTotal > online.size) onlineTotal = Math.max(0, onlineTotal - 1);
    });
    renderOnline();
  }

  // ---- position in the room's history ----------------------------------
  // `pos`: every recorded message up to it was received. Offsets above a gap
  // wait in `ahead` (messages from two servers may arrive out of order).
  var pos = null;
  var ahead = new Set();
  var gapSince = 0;
  function validPosition(p) {
    return p && typeof p.epoch === "string" && /^[A-Za-z0-9]{8}$/.test(p.epoch) &&
      typeof p.offset === "number" && p.offset >= 0 && Math.floor(p.offset) === p.offset;
  }
  function startAt(p) {
    pos = validPosition(p) ? { epoch: p.epoch, offset: p.offset } : null;
    ahead.clear();
    gapSince = 0;
  }
  function received(p) {
    if (!pos || !validPosition(p) || p.epoch !== pos.epoch || p.offset <= pos.offset) return;
    if (p.offset === pos.offset + 1) {
      pos.offset += 1;
      while (ahead.delete(pos.offset + 1)) pos.offset += 1;
      if (!ahead.size) gapSince = 0;
    } else {
      if (!ahead.size) gapSince = Date.now();
      ahead.add(p.offset);
    }
  }
  // What to ask for when reconnecting: a gap that stayed open is a message
  // this page never gets (an event it does not show), not one on its way.
  function sinceParam() {
    if (!pos) return "";
    var offset = pos.offset;
    if (ahead.size && Date.now() - gapSince > GAP_MS) {
      ahead.forEach(function (o) { offset = Math.max(offset, o); });
    }
    return pos.epoch + ":" + offset;
  }

  // ---- connection state ----------------------------------------------
  function setState(state) {
    statusEl.textContent = state;
    statusEl.dataset.state = state;
    var open = state === "connected";
    sendBtn.disabled = !open;
    if (open) retryEl.textContent = "";
  }

  var ws = null;
  var attempt = 0;
  var retryTimer = null;
  var countdownTimer = null;
  var dropped = false; // the connection dropped after it had been open

  function wsUrl() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var url = proto + "//" + location.host + "/ws/chat/" + encodeURIComponent(room) + "/?presence=1";
    var name = currentName();
    if (name) url += "&username=" + encodeURIComponent(name);
    var since = sinceParam();
    if (since) url += "&since=" + encodeURIComponent(since);
    return url;
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = countdownTimer = null;
    if (attempt === 0) setState("connecting");
    var sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    // "connected" once the server says so (it has then joined us to the room);
    // a server that never sends connection_established still gets there.
    var fallback = null;
    var established = function () {
      clearTimeout(fallback);
      if (ws !== sock || statusEl.dataset.state === "connected") return;
      attempt = 0;
      setState("connected");
    };
    sock.onopen = function () {
      if (ws === sock) fallback = setTimeout(established, 2000);
    };
    sock.onmessage = function (e) {
      if (ws !== sock) return;
      var ev;
      try { ev = JSON.parse(e.data); } catch (err) { return; }
      if (!ev || typeof ev !== "object") return;
      switch (ev.type) {
        case "connection_established":
          // Recovering: the missed messages follow and bring the position up
          // to the greeting's. Otherwise live messages follow the greeting's.
          if (ev.position && !(ev.recovered === true && pos && pos.epoch === ev.position.epoch)) {
            startAt(ev.position);
          }
          if (dropped) {
            dropped = false;
            line("status-line", "Connection is back.");
          }
          established();
          break;
        case "error":
          line("error", "Error: " + (ev.message || "unknown error"));
          break;
        case "recovery_failed":
          line("notice", typeof ev.message === "string" && ev.message
            ? ev.message + "." : "Some messages could not be recovered.");
          break;
        case "presence":
          setOnline(ev);
          break;
        case "user_join":
          received(ev.position);
          presence(ev, "joined");
          joined(ev);
          break;
        case "user_leave":
          received(ev.position);
          presence(ev, "left");
          left(ev);
          break;
        case "chat_message":
        case undefined: // tutorial-style frame: {"message": ...}
          received(ev.position);
          if (typeof ev.message === "string") showMessage(ev);
          break;
        default:
          break; // unknown event types are ignored
      }
    };
    sock.onclose = function (e) {
      clearTimeout(fallback);
      if (ws !== sock) return;
      ws = null;
      var wasOpen = statusEl.dataset.state === "connected";
      // Who is online is read again on reconnecting.
      online.clear();
      onlineTotal = 0;
      renderOnline();
      if (e.code >= 4000 && e.code <= 4999) {
        // The application's refusal (signed out, not allowed in): trying
        // again would only meet it again, so the page stops and says why.
        var why = e.code === 4401 ? "Signed out: sign in again, then reload this page."
          : e.code === 4404 ? "The server does not accept this room name."
          : (e.reason || "The server refused this connection") + " (" + e.code + ")";
        // 4400 and 4409 refuse the name in the URL: a new name reconnects.
        nameRefused = e.code === 4400 || e.code === 4409;
        if (nameRefused) why += " Change your name to join.";
        line("error", why);
        retryEl.textContent = "";
        setState("closed");
        return;
      }
      if (e.code === 1009) line("error", "Message too large; the server closed the connection.");
      else if (e.code === 1008) line("error", "Too many messages; the server closed the connection.");
      if (wasOpen && !dropped) {
        dropped = true;
        line("status-line", "Connection lost. Reconnecting\u2026");
      }
      scheduleReconnect();
    };
    // onerror is always followed by onclose; nothing to do here.
  }

  function scheduleReconnect() {
    setState("reconnecting");
    var base = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * Math.pow(2, attempt));
    var delay = Math.round(base * (1 - JITTER + Math.random() * 2 * JITTER));
    attempt = Math.min(attempt + 1, 16);
    var due = Date.now() + delay;
    var tick = function () {
      var s = Math.max(0, (due - Date.now()) / 1000);
      retryEl.textContent = "retrying in " + (s < 1 ? s.toFixed(1) : Math.ceil(s)) + " s";
    };
    tick();
    countdownTimer = setInterval(tick, 250);
    retryTimer = setTimeout(connect, delay);
  }

  // Reconnect at once when the network comes back or the tab is shown again.
  function reconnectNow() {
    if (!ws && retryTimer) connect();
  }
  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) reconnectNow();
  });

  // ---- sending --------------------------------------------------------
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = msgInput.value.trim();
    if (!text) { msgInput.focus(); return; }
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    var payload = { message: text };
    var name = currentName();
    if (name) payload.username = name;
    ws.send(JSON.stringify(payload));
    msgInput.value = "";
    msgInput.focus();
  });

  if (!room) {
    setState("reconnecting");
    line("error", "No room in this address.");
    return;
  }
  renderOnline();
  setState("connecting");
  connect();
})();
