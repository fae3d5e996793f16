// Room picker: lists the rooms that have members now and lets the user enter one.
(function () {
  "use strict";

  var ROOM_RE = /^[A-Za-z0-9_-]{1,94}$/;
  var REFRESH_MS = 3000;

  var list = document.getElementById("rooms");
  var note = document.getElementById("rooms-note");
  var form = document.getElementById("room-form");
  var input = document.getElementById("room-name");
  var error = document.getElementById("room-error");

  function roomUrl(room) {
    return "/chat/" + encodeURIComponent(room) + "/";
  }

  function render(rooms) {
    var items = rooms
      .filter(function (r) { return r && typeof r.room === "string" && ROOM_RE.test(r.room); })
      .sort(function (a, b) { return (b.members || 0) - (a.members || 0) || (a.room < b.room ? -1 : 1); })
      .map(function (r) {
        var n = Number(r.members) || 0;
        var li = document.createElement("li");
        li.dataset.room = r.room;
        li.dataset.members = String(n);
        var a = document.createElement("a");
        a.href = roomUrl(r.room);
        var name = document.createElement("span");
        name.className = "room-name";
        name.textContent = r.room;
        var count = document.createElement("span");
        count.className = "count";
        count.textContent = n + (n === 1 ? " member" : " members");
        a.append(name, count);
        li.append(a);
        return li;
      });
    list.replaceChildren.apply(list, items);
    list.setAttribute("aria-busy", "false");
    note.textContent = items.length ? "" : "No one is chatting right now. Start a room above.";
    note.hidden = items.length > 0;
  }

  var timer = null;
  function refresh() {
    clearTimeout(timer);
    fetch("/api/rooms", { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (res) {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.json();
      })
      .then(function (body) {
        render(Array.isArray(body && body.rooms) ? body.rooms : []);
      })
      .catch(function () {
        note.hidden = false;
        note.textContent = "Could not load the room list; retrying…";
      })
      .finally(function () {
        timer = setTimeout(refresh, REFRESH_MS);
      });
  }

  function showError(text) {
    error.textContent = text;
    error.hidden = !text;
    input.setAttribute("aria-invalid", text ? "true" : "false");
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var room = input.value.trim();
    if (!ROOM_RE.test(room)) {
      showError(room
        ? "Invalid room name: use 1 to 94 letters, digits, “_” or “-”."
        : "Please enter a room name.");
      input.focus();
      return;
    }
    showError("");
    location.href = roomUrl(room);
  });

  input.addEventListener("input", function () {
    if (!error.hidden && ROOM_RE.test(input.value.trim())) showError("");
  });

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });

  refresh();
})();
