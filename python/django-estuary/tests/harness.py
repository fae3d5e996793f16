"""Estuary's side of the relay protocol, played over a channel layer, and
Channels' own worker (what `runworker` runs) serving a consumer."""

import asyncio
import contextlib

from channels.routing import ChannelNameRouter
from channels.worker import Worker

#: How long any reply may take (a bound, never a pause).
WAIT = 10.0


class Connection:
    """One relayed connection: sends its events to the worker channel and
    reads what comes back on its own channel, keeping its state as Estuary
    does."""

    def __init__(self, layer, worker_channel, channel, scope):
        self.layer = layer
        self.worker_channel = worker_channel
        self.channel = channel
        self.scope = scope
        self.seq = -1
        self.state = {}

    async def send_event(self, kind, **extra):
        """Sends the next event (without waiting for its acknowledgement) and returns its seq."""
        self.seq += 1
        event = {"type": kind, "channel": self.channel, "seq": self.seq, "scope": self.scope, "state": self.state}
        event.update(extra)
        await self.layer.send(self.worker_channel, event)
        return self.seq

    async def next(self, wait=WAIT):
        """The next message on the connection's channel."""
        return await asyncio.wait_for(self.layer.receive(self.channel), wait)

    async def until_ack(self, seq, wait=WAIT):
        """The messages before the acknowledgement of ``seq``; takes its state."""
        messages = []
        while True:
            message = await self.next(wait)
            if message["type"] == "estuary.ack":
                if message["seq"] != seq:
                    raise AssertionError(f"acknowledged {message['seq']} while waiting for {seq}: {messages}")
                if "state" in message:
                    self.state = message["state"]
                return messages
            messages.append(message)

    async def event(self, kind, **extra):
        return await self.until_ack(await self.send_event(kind, **extra))

    async def connect(self):
        return await self.event("websocket.connect")

    async def receive(self, text=None, bytes=None):
        extra = {"text": text} if text is not None else {"bytes": bytes}
        return await self.event("websocket.receive", **extra)

    async def deliver(self, event):
        """An estuary.event: a message of another type sent to this connection."""
        return await self.event("estuary.event", event=event)

    async def disconnect(self, code=1000):
        """Sends the disconnect (Estuary does not wait for it)."""
        await self.send_event("websocket.disconnect", code=code)


def scope(path="/ws/test/", kwargs=None, user=None, query_string="", query=None, **more):
    value = {
        "type": "websocket",
        "path": path,
        "query_string": query_string,
        "query": query or {},
        "url_route": {"args": [], "kwargs": kwargs or {}},
        "user": user,
        "groups": [],
        "subprotocols": [],
        "headers": [["origin", "https://example.org"]],
        "client": ["203.0.113.5", 51234],
    }
    value.update(more)
    return value


class FakeEstuary:
    """Opens connections on ``layer`` whose events go to ``worker_channel``."""

    def __init__(self, layer, worker_channel):
        self.layer = layer
        self.worker_channel = worker_channel

    async def open(self, **scope_args):
        channel = await self.layer.new_channel()
        return Connection(self.layer, self.worker_channel, channel, scope(**scope_args))


class StoppableWorker(Worker):
    """Channels' Worker, whose listeners stop with it: its own handle() leaves
    them running when cancelled (runworker ends the process instead), and a
    stopped worker's listener would take the next worker's events."""

    async def handle(self):
        self.listeners = [asyncio.ensure_future(self.listener(channel)) for channel in self.channels]
        try:
            await asyncio.gather(*self.listeners)
        finally:
            for listener in self.listeners:
                listener.cancel()
            await asyncio.gather(*self.listeners, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_worker(consumer_class, layer, channel="chat"):
    """Channels' Worker (runworker's server) serving ``consumer_class.as_worker()``
    on ``channel`` until the block ends."""
    worker = StoppableWorker(ChannelNameRouter({channel: consumer_class.as_worker()}), [channel], layer)
    task = asyncio.ensure_future(worker.arun())
    try:
        yield worker
    finally:
        task.cancel()
        instances = [details["future"] for details in worker.application_instances.values()]
        for future in instances:
            future.cancel()
        await asyncio.gather(task, *instances, return_exceptions=True)


async def settle(condition, turns=200):
    """Lets the event loop run until ``condition()`` holds, at most ``turns``
    times round (no clock involved); raises if it never does."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")
