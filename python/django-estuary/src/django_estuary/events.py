"""One event of the relay protocol (docs/WORKERS.md), checked and handled.

Both transports use :func:`handle_event`: the worker (``as_worker()``) sends
what the handler sends to the connection's channel and then an
``estuary.ack``; the HTTP view collects it and answers it in its response.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

from channels.db import aclose_old_connections
from django.conf import settings

from .scope import ProtocolError

__all__ = [
    "CONNECT",
    "DISCONNECT",
    "ESTUARY_EVENT",
    "EVENT_TYPES",
    "RECEIVE",
    "ProtocolError",
    "check_state",
    "connection_of",
    "handle_event",
]

logger = logging.getLogger("django_estuary")

CONNECT = "websocket.connect"
RECEIVE = "websocket.receive"
DISCONNECT = "websocket.disconnect"
ESTUARY_EVENT = "estuary.event"
EVENT_TYPES = frozenset({CONNECT, RECEIVE, DISCONNECT, ESTUARY_EVENT})
#: The close code sent when a handler raises (as Daphne closes for an
#: application error).
INTERNAL_ERROR = 1011

Send = Callable[[dict], Awaitable[None]]


def connection_of(event: Any) -> tuple[str, int] | None:
    """The event's connection channel and sequence number, or ``None`` when
    it has no usable ones (such an event cannot be answered)."""
    if not isinstance(event, dict):
        return None
    channel, seq = event.get("channel"), event.get("seq")
    if not isinstance(channel, str) or not channel:
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return None
    return channel, seq


def check_event(event: dict) -> None:
    """Raises :class:`ProtocolError` unless the event has the keys its type
    needs (the scope is checked when the consumer is bound to it)."""
    kind = event.get("type")
    state = event.get("state")
    if state is not None and not isinstance(state, dict):
        raise ProtocolError("the event's state must be a map")
    if kind == RECEIVE:
        text, data = event.get("text"), event.get("bytes")
        if not ((isinstance(text, str) and data is None) or (isinstance(data, bytes) and text is None)):
            raise ProtocolError("websocket.receive needs text (a string) or bytes")
    elif kind == DISCONNECT:
        code = event.get("code", 1006)
        if isinstance(code, bool) or not isinstance(code, int):
            raise ProtocolError("websocket.disconnect's code must be an integer")
    elif kind == ESTUARY_EVENT:
        inner = event.get("event")
        if not isinstance(inner, dict) or not isinstance(inner.get("type"), str):
            raise ProtocolError("estuary.event needs an event: a map with a type")


def _check_keys(value: Any, where: str) -> None:
    """Raises ``TypeError`` at the first map key in ``value`` that is not a
    string: JSON would turn it into one over HTTP, msgpack would not over
    the channel layer, so the state would differ by transport."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"the connection's state must have string keys only: {where} has the key {key!r}")
            _check_keys(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_keys(item, f"{where}[{index}]")


def check_state(state: Any) -> dict:
    """The connection's state as it goes back to Estuary: a map with string
    keys (at any depth) whose values JSON can carry (both transports must).
    Estuary keeps at most the route's ``max_state_bytes`` of it (64 KiB by
    default, as msgpack); it refuses a larger one and keeps the previous.

    >>> check_state({"room": "lobby", "seen": [1, 2], "prefs": {"theme": "dark"}})
    {'room': 'lobby', 'seen': [1, 2], 'prefs': {'theme': 'dark'}}
    >>> check_state({"counts": {1: "one"}})
    Traceback (most recent call last):
      ...
    TypeError: the connection's state must have string keys only: state['counts'] has the key 1
    """
    if not isinstance(state, dict):
        raise TypeError(f"the connection's state must be a dict, not {type(state).__name__}")
    _check_keys(state, "state")
    try:
        json.dumps(state, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"the connection's state must hold only JSON values: {error}") from None
    return state


async def handle_event(consumer_class: type, initkwargs: dict, event: dict, send: Send, *, close_old_connections: bool = True) -> dict:
    """Runs one event through a new consumer and returns the state to
    acknowledge it with.

    ``send`` gets every message the handler sends, in order. When the
    handler raises, the traceback is logged, ``websocket.close`` with 1011 is
    sent (unless the event is the disconnect) and the state the event came
    with is returned unchanged. An event of a type this version does not
    know is logged and acknowledged without a call.

    ``close_old_connections`` drops database connections past their
    ``CONN_MAX_AGE`` before the handler, as Channels does before each one
    (a worker's connections live long); a view leaves that to Django's
    request cycle.
    """
    incoming = event.get("state") if isinstance(event.get("state"), dict) else {}
    kind = event.get("type")
    channel = event.get("channel")
    if kind not in EVENT_TYPES:
        logger.warning("ignored an event of unknown type %r for %s (acknowledged)", kind, channel)
        return incoming
    try:
        check_event(event)
        consumer = consumer_class(**initkwargs)
        consumer._bind(event, send)
        if close_old_connections and getattr(settings, "DATABASES", None):
            # As Channels does before each handler: drop connections past CONN_MAX_AGE.
            await aclose_old_connections()
        await consumer.dispatch(event)
        return consumer._outgoing_state()
    except Exception:
        logger.exception(
            "%s.%s raised handling %s (seq %s) of %s; %s",
            consumer_class.__module__,
            consumer_class.__qualname__,
            kind,
            event.get("seq"),
            channel,
            "the connection was gone already" if kind == DISCONNECT else "closing it with 1011",
        )
        if kind != DISCONNECT:
            try:
                await send({"type": "websocket.close", "code": INTERNAL_ERROR})
            except Exception:
                logger.exception("could not close %s with 1011", channel)
        return incoming
