"""Testing your consumers without Estuary: this module plays Estuary's side
of the relay protocol over a channel layer (Channels' in-memory one in
tests), while Channels' own worker (what ``runworker`` runs) serves your
consumer::

    from channels.layers import get_channel_layer
    from django_estuary.testing import FakeEstuary, running_worker, user

    class ChatTests(unittest.IsolatedAsyncioTestCase):
        async def test_hello(self):
            layer = get_channel_layer()
            async with running_worker(ChatConsumer, layer, "chat"):
                conn = await FakeEstuary(layer, "chat").open(
                    path="/ws/chat/lobby/", kwargs={"room_name": "lobby"}, user=user(42, "alice"))
                self.assertEqual((await conn.connect())[0], {"type": "websocket.accept"})
                frames = await conn.receive('{"message": "hi"}')   # what the handler sent
                conn.state                                          # as Estuary keeps it

Each call that sends an event waits for its acknowledgement (at most
``WAIT`` seconds) and returns the messages sent before it; the state it
carried is the next event's, as in Estuary.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

from channels.routing import ChannelNameRouter
from channels.worker import Worker

__all__ = ["WAIT", "Connection", "FakeEstuary", "running_worker", "scope", "user"]

#: How long a reply may take before a test fails (a bound, never a pause).
WAIT = 10.0


def user(id: int | str, name: str | None = None, **attributes: Any) -> dict:
    """The scope's ``user`` as Estuary sends it for an authenticated user.

    >>> user(42, "alice", is_staff=True)
    {'id': '42', 'name': 'alice', 'attributes': {'is_staff': True}}
    """
    return {"id": str(id), "name": name if name is not None else str(id), "attributes": attributes}


def scope(
    path: str = "/ws/",
    kwargs: dict | None = None,
    user: dict | None = None,
    query_string: str | bytes = "",
    query: dict | None = None,
    **more: Any,
) -> dict:
    """A scope as Estuary sends it (``user`` ``None`` is an anonymous visitor);
    ``more`` sets or replaces any key (``subprotocols``, ``headers``, ...)."""
    value = {
        "type": "websocket",
        "path": path,
        "query_string": query_string,
        "query": query or {},
        "url_route": {"args": [], "kwargs": kwargs or {}},
        "user": user,
        "groups": [],
        "subprotocols": [],
        "headers": [["origin", "http://127.0.0.1:8000"]],
        "client": ["127.0.0.1", 50000],
    }
    value.update(more)
    return value


class Connection:
    """One relayed connection: its events go to the worker channel, and what
    the consumer sends arrives on ``channel``, its own."""

    def __init__(self, layer: Any, worker_channel: str, channel: str, scope: dict):
        self.layer = layer
        self.worker_channel = worker_channel
        self.channel = channel
        self.scope = scope
        self.seq = -1
        self.state: dict = {}

    async def send_event(self, kind: str, **extra: Any) -> int:
        """Sends the connection's next event without waiting; returns its seq."""
        self.seq += 1
        event = {"type": kind, "channel": self.channel, "seq": self.seq, "scope": self.scope, "state": self.state}
        event.update(extra)
        await self.layer.send(self.worker_channel, event)
        return self.seq

    async def next(self, wait: float = WAIT) -> dict:
        """The next message on the connection's channel (a reply, an
        acknowledgement, or a group message)."""
        return await asyncio.wait_for(self.layer.receive(self.channel), wait)

    async def until_ack(self, seq: int, wait: float = WAIT) -> list[dict]:
        """The messages before the acknowledgement of ``seq``; its state
        becomes the connection's."""
        messages = []
        while True:
            message = await self.next(wait)
            if message.get("type") == "estuary.ack":
                if message.get("seq") != seq:
                    raise AssertionError(f"acknowledged {message.get('seq')} while waiting for {seq}: {messages}")
                if "state" in message:
                    self.state = message["state"]
                return messages
            messages.append(message)

    async def event(self, kind: str, **extra: Any) -> list[dict]:
        """Sends an event and returns what was sent before its acknowledgement."""
        return await self.until_ack(await self.send_event(kind, **extra))

    async def connect(self) -> list[dict]:
        """``websocket.connect``: ``[{"type": "websocket.accept"}, ...]`` when accepted."""
        return await self.event("websocket.connect")

    async def receive(self, text: str | None = None, bytes: bytes | None = None) -> list[dict]:
        """A frame from the client, text or bytes."""
        return await self.event("websocket.receive", **({"text": text} if text is not None else {"bytes": bytes}))

    async def deliver(self, event: dict) -> list[dict]:
        """An ``estuary.event``: a message of another type (``chat.message``)
        sent to this connection's channel or one of its groups."""
        return await self.event("estuary.event", event=event)

    async def disconnect(self, code: int = 1000) -> None:
        """``websocket.disconnect``; as Estuary, does not wait for it."""
        await self.send_event("websocket.disconnect", code=code)


class FakeEstuary:
    """Opens relayed connections on ``layer`` whose events go to ``worker_channel``."""

    def __init__(self, layer: Any, worker_channel: str):
        self.layer = layer
        self.worker_channel = worker_channel

    async def open(self, **scope_args: Any) -> Connection:
        """A new connection with a scope made by :func:`scope` from ``scope_args``."""
        return Connection(self.layer, self.worker_channel, await self.layer.new_channel(), scope(**scope_args))


class _StoppableWorker(Worker):
    """Channels' Worker whose listeners stop with it (its own handle() leaves
    them running when cancelled: runworker ends the process instead, and a
    stopped worker's listener would take the next one's events)."""

    async def handle(self) -> None:
        listeners = [asyncio.ensure_future(self.listener(channel)) for channel in self.channels]
        try:
            await asyncio.gather(*listeners)
        finally:
            for listener in listeners:
                listener.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_worker(consumer_class: type, layer: Any, channel: str = "chat") -> AsyncIterator[Worker]:
    """Channels' Worker serving ``consumer_class.as_worker()`` on ``channel``
    (through a ``ChannelNameRouter``, as ``runworker`` does) until the block ends."""
    worker = _StoppableWorker(ChannelNameRouter({channel: consumer_class.as_worker()}), [channel], layer)
    task = asyncio.ensure_future(worker.arun())
    try:
        yield worker
    finally:
        task.cancel()
        instances = [details["future"] for details in worker.application_instances.values()]
        for future in instances:
            future.cancel()
        await asyncio.gather(task, *instances, return_exceptions=True)
