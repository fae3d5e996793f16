"""Consumers shaped like Channels' ``AsyncWebsocketConsumer``, run per event.

Estuary holds the socket and hands each event of the connection (connect,
each message, disconnect, and group or channel messages it does not render
itself) to your code, in order, one at a time (docs/WORKERS.md). A new
consumer instance handles each event, possibly in another worker process:
what must outlive one event goes in ``self.state`` (or an attribute named in
``state_attributes``), which Estuary keeps with the connection and hands back
with the next event.

A tutorial consumer ports with these changes::

    from django_estuary.consumer import EstuaryConsumer

    class ChatConsumer(EstuaryConsumer):           # 1. the base class
        state_attributes = ("room_group_name",)    # 2. what connect() sets and later events read

        async def connect(self):
            self.room_group_name = "chat_" + self.scope["url_route"]["kwargs"]["room_name"]
            await self.channel_layer.group_add(self.room_group_name, self.channel_name)
            await self.accept()

        async def disconnect(self, close_code):
            await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

        async def receive(self, text_data=None, bytes_data=None):
            message = json.loads(text_data)["message"]
            # 3. (optional) a websocket.send message is rendered by Estuary once for the
            #    whole group; a chat.message would call chat_message once per member.
            await self.channel_layer.group_send(
                self.room_group_name, {"type": "websocket.send", "text": json.dumps({"message": message})}
            )

    # 4. routing: ChannelNameRouter({"chat": ChatConsumer.as_worker()}) and
    #    `python manage.py runworker chat`, or path("estuary/events/", events_view(ChatConsumer)).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Sequence

from channels.consumer import get_handler_name
from channels.exceptions import AcceptConnection, DenyConnection, InvalidChannelLayerError, StopConsumer
from channels.layers import get_channel_layer

from . import events
from .scope import build_scope

try:
    from channels import DEFAULT_CHANNEL_LAYER
except ImportError:  # pragma: no cover - channels < 4 kept it elsewhere
    DEFAULT_CHANNEL_LAYER = "default"

__all__ = ["AsyncJsonEstuaryConsumer", "EstuaryConsumer"]


class EstuaryConsumer:
    """The base class of a consumer whose connection Estuary holds.

    Shaped like ``channels.generic.websocket.AsyncWebsocketConsumer``:
    override :meth:`connect`, :meth:`receive`, :meth:`disconnect` and
    handlers named after message types (``chat.message`` ->
    ``chat_message(event)``); call :meth:`accept`, :meth:`send`,
    :meth:`close`, and ``self.channel_layer``'s ``group_add``,
    ``group_discard`` and ``group_send`` as always.

    Per event you have ``self.scope`` (see :mod:`django_estuary.scope`),
    ``self.channel_name`` (the connection's channel: what ``group_add`` and
    a ``send`` from elsewhere take), ``self.channel_layer``,
    ``self.channel_layer_alias`` and ``self.state``.

    Class attributes:

    ``groups``
        group names joined when the connection opens and left when it
        closes (as in Channels). Groups that depend on the connection are
        better named in the route of ``estuary.toml``, where Estuary joins
        them before ``connect``.
    ``state_attributes``
        names of instance attributes kept in ``self.state`` between events:
        read back before each handler, saved after it.
    ``worker_max_connections``, ``worker_idle_timeout``
        bounds of :meth:`as_worker`'s application: how many connections it
        runs at once (each on its own task), and after how many seconds
        without an event it forgets one (a later event starts it again: its
        state comes with the event).

    >>> import asyncio
    >>> class Echo(EstuaryConsumer):
    ...     async def receive(self, text_data=None, bytes_data=None):
    ...         self.state["seen"] = self.state.get("seen", 0) + 1
    ...         await self.send(text_data=text_data)
    >>> sent = []
    >>> async def send(message):
    ...     sent.append(message)
    >>> event = {"type": "websocket.receive", "channel": "specific.a!b", "seq": 1,
    ...          "scope": {"path": "/ws/echo/"}, "state": {}, "text": "hi"}
    >>> asyncio.run(events.handle_event(Echo, {}, event, send))
    {'seen': 1}
    >>> sent
    [{'type': 'websocket.send', 'text': 'hi'}]
    """

    groups: Sequence[str] = ()
    state_attributes: Sequence[str] = ()
    channel_layer_alias: str = DEFAULT_CHANNEL_LAYER
    worker_max_connections: int = 1000
    worker_idle_timeout: float = 60.0

    scope: dict[str, Any]
    state: dict[str, Any]
    channel_name: str

    def __init__(self, **kwargs: Any):
        for key, value in kwargs.items():
            setattr(self, key, value)

    # -- the two ways to run it -------------------------------------------------

    @classmethod
    def _check_initkwargs(cls, initkwargs: dict) -> None:
        for key in initkwargs:
            if not hasattr(cls, key):
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {key!r}: only class attributes may be set")

    @classmethod
    def as_worker(cls, **initkwargs: Any):
        """The ASGI application for a worker channel: route it with
        ``ChannelNameRouter({"chat": ChatConsumer.as_worker()})`` in your
        ASGI application and run ``python manage.py runworker chat``.
        ``initkwargs`` set class attributes on each instance, as
        ``as_asgi()`` does.

        Each connection's events run in order on a task of their own, so a
        slow handler (a streamed reply) holds up only its own connection.
        """
        from .worker import EstuaryWorkerApplication

        cls._check_initkwargs(initkwargs)
        return EstuaryWorkerApplication(cls, initkwargs)

    @classmethod
    def as_view(cls, **initkwargs: Any):
        """The Django view for ``http = "..."`` routes (the same as
        :func:`django_estuary.views.events_view`)."""
        from .views import events_view

        return events_view(cls, **initkwargs)

    # -- set up for one event -----------------------------------------------------

    def _bind(self, event: dict, send: events.Send) -> None:
        """Takes on the connection of ``event``; messages go to ``send``."""
        self.scope = build_scope(event.get("scope"))
        self.channel_name = event["channel"]
        self.state = copy.deepcopy(event.get("state") or {})
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        for name in self.state_attributes:
            if name in self.state:
                setattr(self, name, self.state[name])

    def _outgoing_state(self) -> dict:
        state = self.state
        for name in self.state_attributes:
            if name in vars(self):
                state[name] = vars(self)[name]
            else:
                state.pop(name, None)
        return events.check_state(state)

    # -- dispatch -------------------------------------------------------------------

    async def dispatch(self, message: dict) -> None:
        """Calls the handler named after the message's type, as Channels does
        (``websocket.receive`` -> ``websocket_receive``); a type without a
        handler raises ``ValueError``."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        try:
            await handler(message)
        except StopConsumer:
            pass

    async def websocket_connect(self, message: dict) -> None:
        """Joins ``groups``, then calls :meth:`connect`."""
        await self._groups("group_add")
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def websocket_receive(self, message: dict) -> None:
        """Calls :meth:`receive` with the frame's text or bytes."""
        if message.get("text") is not None:
            await self.receive(text_data=message["text"])
        else:
            await self.receive(bytes_data=message["bytes"])

    async def websocket_disconnect(self, message: dict) -> None:
        """Leaves ``groups``, then calls :meth:`disconnect` with the close code."""
        await self._groups("group_discard")
        await self.disconnect(message.get("code", 1006))

    async def estuary_event(self, message: dict) -> None:
        """A message sent to the connection's channel or one of its groups
        that Estuary does not render itself: dispatched by its own type
        (``chat.message`` -> ``chat_message``)."""
        await self.dispatch(message["event"])

    async def _groups(self, method: str) -> None:
        if not self.groups:
            return
        if self.channel_layer is None:
            raise InvalidChannelLayerError("BACKEND is unconfigured or doesn't support groups")
        for group in self.groups:
            await getattr(self.channel_layer, method)(group, self.channel_name)

    # -- what you override ----------------------------------------------------------

    async def connect(self) -> None:
        """The connection opens: accept it (the default) or close it."""
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """A frame from the client."""

    async def disconnect(self, code: int) -> None:
        """The connection closed with ``code`` (1006 when it was lost); what
        you send now goes nowhere."""

    # -- what you call ----------------------------------------------------------------

    async def send_message(self, message: dict) -> None:
        """Sends a raw message of the relay protocol to Estuary (Channels
        calls this ``super().send(message)``)."""
        await self.base_send(message)

    async def accept(self, subprotocol: str | None = None) -> None:
        """Accepts the connection (in :meth:`connect`)."""
        message: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol is not None:
            message["subprotocol"] = subprotocol
        await self.base_send(message)

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool | int = False) -> None:
        """Sends a frame to the client; ``close`` (true, or a close code)
        closes the connection after it."""
        if text_data is not None:
            await self.base_send({"type": "websocket.send", "text": text_data})
        elif bytes_data is not None:
            await self.base_send({"type": "websocket.send", "bytes": bytes(bytes_data)})
        else:
            raise ValueError("You must pass one of bytes_data or text_data")
        if close:
            await self.close(close)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Closes the connection (code 1000 unless given); in :meth:`connect`,
        before :meth:`accept`, it refuses the handshake with 403, and after
        it the handshake completes and the connection is closed right away
        with ``code``, as Channels does."""
        message: dict[str, Any] = {"type": "websocket.close"}
        if code is not None and code is not True:
            message["code"] = code
        if reason:
            message["reason"] = reason
        await self.base_send(message)


class AsyncJsonEstuaryConsumer(EstuaryConsumer):
    """:class:`EstuaryConsumer` speaking JSON, as Channels'
    ``AsyncJsonWebsocketConsumer``: override :meth:`receive_json`, call
    :meth:`send_json`; :meth:`encode_json` and :meth:`decode_json` may be
    overridden. A text frame that is not JSON raises (so the connection is
    closed with 1011), as a binary frame does: override :meth:`receive` to
    answer those yourself.
    """

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data:
            await self.receive_json(await self.decode_json(text_data), **kwargs)
        else:
            raise ValueError("No text section for incoming WebSocket frame!")

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """A frame from the client, decoded."""

    async def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encodes ``content`` and sends it as a text frame."""
        await self.send(text_data=await self.encode_json(content), close=close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content)

