"""A Django worker's side of the relay protocol (docs/WORKERS.md), written
with nothing but channels_redis: `channel_layer.receive` on the worker
channel, answers sent to the connection's channel.

Run by crates/estuary-relay/tests/redis.rs with the interop venv's Python.
It prints `ready` once listening. What it saw on the wire it tells the
client, so the Rust test can check the types a Django process gets:

- on `websocket.connect`: a JSON description of the event (key types, the
  scope's byte strings), then `websocket.accept` and the acknowledgement
  with a state `{"count": 0}`;
- on `websocket.receive`: `<text>:<count>` (the count kept in the state),
  bytes reversed for a binary frame; `broadcast` sends `to the room` to
  the connection's first group; `note` sends a `chat.note` to it (which
  comes back as an `estuary.event`); `hang` answers `working` and never
  acknowledges (the test kills the process);
- on `estuary.event`: `note:<type>:<n>`;
- on `websocket.disconnect`: prints `disconnected <code>` and exits.
"""

import argparse
import asyncio
import json
import sys

from channels_redis.core import RedisChannelLayer


def type_names(mapping):
    return {key: type(value).__name__ for key, value in mapping.items()}


def describe(event):
    scope = event["scope"]
    return {
        "types": type_names(event),
        "scope_types": type_names(scope),
        "query_string": scope["query_string"].decode("latin-1"),
        "header_types": sorted({type(part).__name__ for pair in scope["headers"] for part in pair}),
        "has_cookie": any(name == b"cookie" for name, _ in scope["headers"]),
        "kwargs": scope["url_route"]["kwargs"],
        "kwarg_types": type_names(scope["url_route"]["kwargs"]),
        "query": scope["query"],
        "groups": scope["groups"],
        "user": scope["user"],
        "seq": event["seq"],
    }


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--channel", required=True)
    args = parser.parse_args()
    layer = RedisChannelLayer(hosts=[args.redis], prefix=args.prefix)
    print("ready", flush=True)
    while True:
        event = await layer.receive(args.channel)
        reply = event["channel"]
        kind = event["type"]
        state = event["state"]
        if kind == "websocket.connect":
            await layer.send(reply, {"type": "websocket.send", "text": json.dumps(describe(event))})
            await layer.send(reply, {"type": "websocket.accept"})
            state = {"count": 0}
        elif kind == "websocket.receive":
            text = event.get("text")
            data = event.get("bytes")
            if text == "hang":
                await layer.send(reply, {"type": "websocket.send", "text": "working"})
                await asyncio.Event().wait()
            count = state["count"] + 1
            state = {"count": count}
            group = event["scope"]["groups"][0]
            if data is not None:
                await layer.send(reply, {"type": "websocket.send", "bytes": bytes(reversed(data))})
            elif text == "broadcast":
                await layer.group_send(group, {"type": "websocket.send", "text": "to the room"})
            elif text == "note":
                await layer.group_send(group, {"type": "chat.note", "n": count})
            else:
                await layer.send(reply, {"type": "websocket.send", "text": f"{text}:{count}"})
        elif kind == "estuary.event":
            inner = event["event"]
            await layer.send(reply, {"type": "websocket.send", "text": f"note:{inner['type']}:{inner['n']}"})
        elif kind == "websocket.disconnect":
            print(f"disconnected {event['code']}", file=sys.stderr, flush=True)
            return
        await layer.send(reply, {"type": "estuary.ack", "seq": event["seq"], "state": state})


if __name__ == "__main__":
    asyncio.run(main())
