#!/usr/bin/env python3
"""Idle memory per WebSocket connection of `estuary serve`.

Starts the server (release build), opens N connections to one chat room,
waits until every connection got its greeting, and reports the growth of the
server's resident memory (VmRSS) divided by N, plus the kernel's socket
memory. Repeats the run and prints the median. Loopback only.

    cargo build --release
    target/interop-venv/bin/python bench/idle_memory.py --connections 5000 --runs 3

Needs the `websockets` package (in the interop virtualenv made by
scripts/install-interop.sh). One process may hold 20,000 files here, and the
client holds one per connection, so keep N under about 19,000.
"""

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import websockets


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def sockstat_pages():
    with open("/proc/net/sockstat") as fh:
        for line in fh:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def open_all(url, n, batch):
    conns = []
    for start in range(0, n, batch):
        chunk = await asyncio.gather(*(websockets.connect(url, max_queue=4) for _ in range(min(batch, n - start))))
        for ws in chunk:
            await asyncio.wait_for(ws.recv(), 30)  # the greeting: the member has joined its room
        conns.extend(chunk)
    return conns


def one_run(binary, n, batch):
    port = free_port()
    env = dict(os.environ, RUST_LOG="warn")
    server = subprocess.Popen([binary, "serve", "--bind", f"127.0.0.1:{port}", "--ping-interval", "0"], env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                time.sleep(0.05)
        before = rss_kib(server.pid)
        after, sock_after = asyncio.run(_hold(f"ws://127.0.0.1:{port}/ws/chat/bench/", n, batch, server.pid))
        return before, after, sock_after
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


async def _hold(url, n, batch, pid):
    conns = await open_all(url, n, batch)
    await asyncio.sleep(1)  # let the allocator settle before reading RSS
    after, sock_after = rss_kib(pid), sockstat_pages()
    for ws in conns:
        await ws.close()
    return after, sock_after


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="target/release/estuary")
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch", type=int, default=250)
    args = p.parse_args()
    per_conn, sock = [], []
    for i in range(args.runs):
        before, after, sock_after = one_run(args.binary, args.connections, args.batch)
        kib = (after - before) / args.connections
        per_conn.append(kib)
        sock.append(sock_after)
        print(f"run {i + 1}: RSS {before} -> {after} KiB, {kib:.2f} KiB/conn, TCP mem {sock_after} pages", file=sys.stderr)
    print(f"median: {statistics.median(per_conn):.2f} KiB/connection (server RSS, {args.connections} idle connections, "
          f"{args.runs} runs); kernel TCP memory at peak {statistics.median(sock)} pages (both ends)")


if __name__ == "__main__":
    main()
