// Benchmark peer: the chat server a Node developer would write with `ws`.
// Usage: node server.js PORT   (listens on 127.0.0.1)
'use strict';

const http = require('node:http');
const { WebSocketServer } = require('ws');

const port = Number.parseInt(process.argv[2] ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node server.js PORT');
  process.exit(2);
}

// Same room rule as the chat protocol; trailing slash optional.
const ROOM_PATH = /^\/ws\/chat\/([A-Za-z0-9_-]{1,94})\/?$/;

/** @type {Map<string, Set<import('ws').WebSocket>>} */
const rooms = new Map();

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});

// Default ws options: no permessage-deflate (off by default on the server in ws 8).
const wss = new WebSocketServer({ noServer: true });

server.on('upgrade', (req, socket, head) => {
  const path = (req.url ?? '').split('?', 1)[0];
  const match = ROOM_PATH.exec(path);
  if (!match) {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => join(ws, match[1]));
});

function join(ws, room) {
  let members = rooms.get(room);
  if (!members) {
    members = new Set();
    rooms.set(room, members);
  }
  members.add(ws);

  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      ws.send(JSON.stringify({ type: 'error', message: 'Invalid JSON format' }));
      return;
    }
    if (msg === null || typeof msg !== 'object' || typeof msg.message !== 'string') {
      ws.send(JSON.stringify({ type: 'error', message: 'Invalid message' }));
      return;
    }
    const username = typeof msg.username === 'string' && msg.username ? msg.username : 'Anonymous';
    // Serialise once per room message, not once per recipient.
    const out = JSON.stringify({ type: 'chat_message', message: msg.message, username });
    for (const member of members) {
      if (member.readyState === member.OPEN) member.send(out);
    }
  });

  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0 && rooms.get(room) === members) rooms.delete(room);
  });

  // Without a listener an 'error' event (e.g. invalid UTF-8) would throw and
  // take the whole process down; ws closes the socket itself afterwards.
  ws.on('error', () => {});
}

server.listen(port, '127.0.0.1');

function shutdown() {
  for (const client of wss.clients) client.terminate();
  server.close(() => process.exit(0));
  // Do not hang on half-closed sockets.
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
