"""`python -m django runworker` serving a consumer over the machine's Redis at
127.0.0.1:6379 (a key prefix of this run's own, never FLUSH), with another
channels_redis layer playing Estuary's side, as Estuary shares the layer.

Set DJANGO_ESTUARY_NO_REDIS=1 to skip it where there is no Redis."""

import asyncio
import os
import subprocess
import sys
import tempfile
import unittest
import uuid
from pathlib import Path

from channels_redis.core import RedisChannelLayer
from django.conf import settings

from django_estuary.layers import RedisChannelLayer as EstuaryRedisChannelLayer

from .harness import FakeEstuary

PACKAGE = Path(__file__).resolve().parent.parent
#: How long the worker process may take to start and answer.
STARTUP = 60


@unittest.skipIf(os.environ.get("DJANGO_ESTUARY_NO_REDIS"), "needs Redis at 127.0.0.1:6379")
class RunworkerOverRedis(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.layer = RedisChannelLayer(**settings.CHANNEL_LAYERS["redis"]["CONFIG"])
        self.log = tempfile.TemporaryFile()
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "django", "runworker", "estuary-tests", "--layer", "redis", "--settings", "tests.settings"],
            cwd=PACKAGE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    async def asyncTearDown(self):
        self.worker.terminate()
        try:
            self.worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()
        self.log.close()
        await self.layer.flush()  # this run's prefix only
        await self.layer.close_pools()

    def worker_output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    async def test_connections_are_served_concurrently_and_in_order(self):
        estuary = FakeEstuary(self.layer, "estuary-tests")
        a, b = await estuary.open(), await estuary.open()
        try:
            seq = await a.send_event("websocket.connect")
            self.assertEqual(await a.until_ack(seq, wait=STARTUP), [{"type": "websocket.accept"}])
        except asyncio.TimeoutError:
            self.fail("the worker never answered; its output:\n" + self.worker_output())
        self.assertEqual(await b.connect(), [{"type": "websocket.accept"}])
        gate = f"gate-{uuid.uuid4().hex}"
        slow = await a.send_event("websocket.receive", text=f"wait:{gate}")
        # a's handler waits for the gate; b is served meanwhile, bytes and text in order.
        self.assertEqual(await b.receive(bytes=b"\x00\xff"), [{"type": "websocket.send", "bytes": b"\x00\xff"}])
        self.assertEqual(await b.receive("two"), [{"type": "websocket.send", "text": "two"}])
        await self.layer.send(gate, {"type": "gate.open", "text": "opened"})
        self.assertEqual(await a.until_ack(slow), [{"type": "websocket.send", "text": "done:opened"}])


@unittest.skipIf(os.environ.get("DJANGO_ESTUARY_NO_REDIS"), "needs Redis at 127.0.0.1:6379")
class SharedWorkerChannel(unittest.IsolatedAsyncioTestCase):
    """Two processes reading one worker channel (two ``runworker``), each
    with its own layer: every message goes to one of them, once.
    (channels_redis's own layer gives some messages to both.)"""

    MESSAGES = 300

    async def asyncSetUp(self):
        prefix = f"{settings.REDIS_PREFIX}-shared-{uuid.uuid4().hex[:8]}"
        config = dict(settings.CHANNEL_LAYERS["redis"]["CONFIG"], prefix=prefix, capacity=self.MESSAGES)
        self.sender = RedisChannelLayer(**config)
        self.readers = [EstuaryRedisChannelLayer(**config), EstuaryRedisChannelLayer(**config)]

    async def asyncTearDown(self):
        await self.sender.flush()  # this test's prefix only
        for layer in (self.sender, *self.readers):
            await layer.close_pools()

    async def test_each_message_is_received_once(self):
        for n in range(self.MESSAGES):
            await self.sender.send("chat", {"type": "websocket.receive", "n": n})
        received = []

        async def read(layer):
            # Each reader takes what it can until the channel stays empty.
            while True:
                try:
                    message = await asyncio.wait_for(layer.receive("chat"), 1)
                except asyncio.TimeoutError:
                    return
                received.append(message["n"])

        await asyncio.gather(*(read(layer) for layer in self.readers))
        self.assertEqual(sorted(received), list(range(self.MESSAGES)), "a message was lost or received twice")
