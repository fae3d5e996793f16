#!/usr/bin/env python3
"""Fan-out started by Django: channels_redis's own group_send of a
`chat.message` event to 10 rooms of Estuary's built-in chat, 100 members
each, at RATE group sends per second per room for 10 s; counts what the
members receive and the CPU of the processes named (Estuary and Redis),
per delivery.

    bench/django_fanout.py PORT REDIS_URL PREFIX PID[,PID...] RATE

Run with a Python that has channels_redis and websockets (the interop venv),
pinned away from the server (`taskset -c 1`), against
`estuary serve --layer REDIS_URL --redis-prefix PREFIX` pinned to another
core. Compare with the load generator's fan-out at the same deliveries per
second (`estuary-loadgen ... fanout --rate RATE`), where Estuary's own chat
sends the group messages."""
import asyncio, json, os, sys, time
import websockets
from channels_redis.core import RedisChannelLayer

PORT, REDIS, PREFIX, PIDS = int(sys.argv[1]), sys.argv[2], sys.argv[3], [int(p) for p in sys.argv[4].split(",")]
ROOMS, MEMBERS, RATE, SECONDS = 10, 100, int(sys.argv[5]), 10

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

received = 0
async def member(room, ready):
    global received
    async with websockets.connect(f"ws://127.0.0.1:{PORT}/ws/chat/r{room}/", max_queue=None) as ws:
        ready.set_result(None) if not ready.done() else None
        async for frame in ws:
            if b'"fanout"' in (frame.encode() if isinstance(frame, str) else frame):
                received += 1

async def main():
    layer = RedisChannelLayer(hosts=[{"address": REDIS, "socket_timeout": 30}], prefix=PREFIX)
    tasks = []
    for room in range(ROOMS):
        for _ in range(MEMBERS):
            ready = asyncio.get_running_loop().create_future()
            tasks.append(asyncio.create_task(member(room, ready)))
            await ready
    await asyncio.sleep(1)
    global received
    received = 0
    before = {p: cpu(p) for p in PIDS}
    start = time.perf_counter(); sent = 0
    while time.perf_counter() - start < SECONDS:
        for room in range(ROOMS):
            await layer.group_send(f"chat_r{room}", {"type": "chat.message", "message": "fanout", "username": "django"})
            sent += 1
        await asyncio.sleep(1 / RATE)
    await asyncio.sleep(2)
    after = {p: cpu(p) for p in PIDS}
    used = {p: round(after[p] - before[p], 2) for p in PIDS}
    expected = sent * MEMBERS
    print(json.dumps({"sent": sent, "expected": expected, "received": received,
                      "cpu_s": used, "us_per_delivery": round(sum(used.values()) / max(received, 1) * 1e6, 2)}))
    for t in tasks: t.cancel()
asyncio.run(main())
