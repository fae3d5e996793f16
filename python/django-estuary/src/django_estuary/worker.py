"""The application ``as_worker()`` returns: a worker channel's events, each
connection's in order on a task of its own.

Channels' ``runworker`` hands one application instance every message of the
channel, one after another. Handling them in that order would let one
connection's slow handler (a streamed reply) hold up every other
connection, so this application queues each event on its connection's task
and goes on reading. A connection's task handles its events one at a time,
acknowledges each after its handler returns (``estuary.ack`` with the
state), and ends after the disconnect or ``worker_idle_timeout`` seconds
without an event. At most ``worker_max_connections`` tasks run: past that an
idle one is forgotten, or the application waits for a handler to finish
before it reads on (the events wait in the worker's queue meanwhile;
Estuary bounds how many it has out).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.layers import get_channel_layer

from . import events

__all__ = ["EstuaryWorkerApplication"]

logger = logging.getLogger("django_estuary")


class _Connection:
    __slots__ = ("busy", "queue", "task")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        self.busy = False
        self.task: asyncio.Task[None] | None = None


class EstuaryWorkerApplication:
    """An ASGI application for a ``ChannelNameRouter`` entry: made by
    :meth:`EstuaryConsumer.as_worker() <django_estuary.consumer.EstuaryConsumer.as_worker>`.

    >>> from channels.routing import ChannelNameRouter
    >>> from django_estuary.consumer import EstuaryConsumer
    >>> class Chat(EstuaryConsumer):
    ...     pass
    >>> application = ChannelNameRouter({"chat": Chat.as_worker()})
    """

    def __init__(self, consumer_class: type, initkwargs: dict[str, Any] | None = None):
        self.consumer_class = consumer_class
        self.initkwargs = dict(initkwargs or {})

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope.get("type") != "channel":
            raise ValueError(
                f"{self.consumer_class.__name__}.as_worker() serves a worker channel "
                f"(ChannelNameRouter and runworker), not a {scope.get('type')!r} scope"
            )
        dispatcher = Dispatcher(
            self.consumer_class,
            self.initkwargs,
            max_connections=self.initkwargs.get("worker_max_connections", self.consumer_class.worker_max_connections),
            idle_timeout=self.initkwargs.get("worker_idle_timeout", self.consumer_class.worker_idle_timeout),
        )
        try:
            while True:
                await dispatcher.put(await receive())
        finally:
            await dispatcher.close()


class Dispatcher:
    """Runs events on their connections' tasks (see the module's text).

    Not thread-safe: one per event loop, fed by one reader.
    """

    def __init__(self, consumer_class: type, initkwargs: dict[str, Any], *, max_connections: int, idle_timeout: float):
        if max_connections < 1:
            raise ValueError("worker_max_connections must be at least 1")
        self.consumer_class = consumer_class
        self.initkwargs = initkwargs
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connections: dict[str, _Connection] = {}
        self._room = asyncio.Event()

    async def put(self, event: Any) -> None:
        """Queues ``event`` on its connection's task, starting one if needed
        (waiting while ``max_connections`` handlers are running)."""
        known = events.connection_of(event)
        if known is None:
            logger.warning(
                "dropped a message on the worker channel without a connection channel and seq "
                "(type %r): not an Estuary event",
                event.get("type") if isinstance(event, dict) else type(event).__name__,
            )
            return
        channel, _ = known
        connection = self.connections.get(channel)
        if connection is None:
            connection = await self._open(channel)
        connection.queue.put_nowait(event)

    async def _open(self, channel: str) -> _Connection:
        while len(self.connections) >= self.max_connections:
            if not self._forget_one_idle():
                self._room.clear()
                await self._room.wait()
        connection = _Connection()
        self.connections[channel] = connection
        connection.task = asyncio.ensure_future(self._run(channel, connection))
        return connection

    def _forget_one_idle(self) -> bool:
        for channel, connection in self.connections.items():
            if not connection.busy and connection.queue.empty():
                del self.connections[channel]
                if connection.task is not None:
                    connection.task.cancel()
                return True
        return False

    async def _run(self, channel: str, connection: _Connection) -> None:
        try:
            while True:
                if connection.queue.empty():
                    connection.busy = False
                    self._room.set()
                    try:
                        event = await asyncio.wait_for(connection.queue.get(), self.idle_timeout)
                    except asyncio.TimeoutError:
                        if connection.queue.empty():
                            return
                        continue
                else:
                    event = connection.queue.get_nowait()
                connection.busy = True
                await self._handle(event)
                if event.get("type") == events.DISCONNECT and connection.queue.empty():
                    return
        finally:
            if self.connections.get(channel) is connection:
                del self.connections[channel]
            self._room.set()

    async def _handle(self, event: dict) -> None:
        channel, seq = events.connection_of(event) or ("", 0)
        layer = get_channel_layer(getattr(self.consumer_class, "channel_layer_alias", "default"))
        if layer is None:
            logger.error("no channel layer: cannot answer %s (configure CHANNEL_LAYERS)", channel)
            return

        async def send(message: dict) -> None:
            await layer.send(channel, message)

        try:
            state = await events.handle_event(self.consumer_class, self.initkwargs, event, send)
            if event.get("type") != events.DISCONNECT:
                await send({"type": "estuary.ack", "seq": seq, "state": state})
        except Exception:
            # The channel layer failed (Redis down, the connection's queue full):
            # Estuary times the event out and tells the client.
            logger.exception("could not answer %s (seq %s) of %s", event.get("type"), seq, channel)

    async def close(self) -> None:
        """Cancels every connection's task and waits for them."""
        tasks = [c.task for c in self.connections.values() if c.task is not None]
        self.connections.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
