#!/usr/bin/env python3
"""Django Channels' Redis layers, driven from the command line for Estuary's
interop tests (`estuary_test_support::probe`).

Every message goes through the real Python stack: Django settings, then
`channels.layers.get_channel_layer()`, then channels_redis, as a Django
process uses it. Nothing here knows the wire format; `dump` only reads keys
and hands their members to the layer's own `deserialize`.

    channels_probe.py COMMAND [layer options] [command options]

Commands:
    send        layer.send(channel, message), --repeat times
    group-send  layer.group_send(group, message)
    listen      new_channel() and group_add(), then print what arrives
    receive     receive on a named channel, then print what arrives
    dump        every key under the prefix, stored messages decoded

Layer options: --redis URL (repeat it for a ring, in order), --layer core or
pubsub, --prefix, --capacity, --encryption-key (repeatable), --serializer-format
(msgpack or json; channels_redis's default when absent).

Messages are JSON objects; bytes are written {"__bytes_b64__": "<base64>"},
both in --json and in what is printed. Received messages go to stdout, one
JSON line each; status lines ({"event": "ready" | "done" | "sent" |
"channel_full" | "error", ...}) go to stderr, one JSON line each.

Exit status: 0 done (every message wanted arrived); 1 failed (a full
channel included); 2 the timeout passed first.
"""

import argparse
import asyncio
import base64
import json
import logging
import sys

LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}

# redis-py 8 times a socket out after 5 s, as long as the core layer's
# blocking pop waits: an idle receive would fail. A Django project paired
# with Estuary needs the same setting.
SOCKET_TIMEOUT = 30

BYTES = "__bytes_b64__"


def to_json(value):
    """A received value as JSON: bytes become {"__bytes_b64__": ...}."""
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return {BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    return value


def from_json(value):
    """A --json value as a message: {"__bytes_b64__": ...} becomes bytes."""
    if isinstance(value, dict):
        if list(value) == [BYTES]:
            return base64.b64decode(value[BYTES])
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def say(**status):
    """A status line on stderr."""
    print(json.dumps(status, ensure_ascii=False), file=sys.stderr, flush=True)


def show(message):
    """A received message on stdout."""
    print(json.dumps(to_json(message), ensure_ascii=False), flush=True)


def the_layer(options):
    """The default channel layer of a Django configured with `options`."""
    import django
    from django.conf import settings

    hosts = [{"address": url, "socket_timeout": SOCKET_TIMEOUT} for url in options.redis]
    config = {"hosts": hosts, "prefix": options.prefix}
    if options.encryption_key:
        config["symmetric_encryption_keys"] = options.encryption_key
    if options.serializer_format:
        config["serializer_format"] = options.serializer_format
    if options.layer == "core":
        config["capacity"] = options.capacity
    settings.configure(
        CHANNEL_LAYERS={"default": {"BACKEND": LAYERS[options.layer], "CONFIG": config}},
        USE_TZ=True,
    )
    django.setup()
    from channels.layers import get_channel_layer

    return get_channel_layer()


def message_of(text):
    try:
        message = json.loads(text)
    except ValueError as error:
        raise SystemExit(f"--json: not JSON ({error})")
    if not isinstance(message, dict):
        raise SystemExit("--json: not a JSON object")
    return from_json(message)


def send(options):
    from asgiref.sync import async_to_sync
    from channels.exceptions import ChannelFull

    layer = the_layer(options)
    message = message_of(options.json)
    for sent in range(options.repeat):
        try:
            async_to_sync(layer.send)(options.channel, dict(message))
        except ChannelFull:
            say(event="channel_full", channel=options.channel, sent=sent)
            return 1
    say(event="sent", channel=options.channel, count=options.repeat)
    return 0


def group_send(options):
    from asgiref.sync import async_to_sync

    layer = the_layer(options)
    async_to_sync(layer.group_send)(options.group, message_of(options.json))
    say(event="sent", group=options.group)
    return 0


async def subscribed(options, names):
    """Waits until Redis counts a subscriber on every name: the pub/sub layer
    subscribes without waiting for Redis to confirm, and "ready" must mean
    that a publish reaches us."""
    from channels_redis.utils import _consistent_hash
    from redis import asyncio as aioredis

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    for name in names:
        url = options.redis[_consistent_hash(name, len(options.redis))]
        client = aioredis.Redis.from_url(url)
        try:
            while loop.time() < deadline:
                [(_, count)] = await client.pubsub_numsub(name)
                if count > 0:
                    break
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()


async def collect(layer, channel, options, get_ready):
    """Receives up to --count messages on `channel` within --timeout,
    printing each. The first receive starts before `get_ready` runs (the
    pub/sub layer subscribes to a named channel in it)."""
    loop = asyncio.get_running_loop()
    got = 0
    pending = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    await get_ready()
    deadline = loop.time() + options.timeout
    while True:
        done, _ = await asyncio.wait({pending}, timeout=max(deadline - loop.time(), 0))
        if not done:
            pending.cancel()
            try:
                await pending
            except BaseException:  # the layer may turn the cancel into its own error
                pass
            return got
        show(pending.result())
        got += 1
        if got >= options.count:
            return got
        pending = asyncio.ensure_future(layer.receive(channel))


async def close(layer, options):
    if options.layer == "core":
        await layer.close_pools()  # never flush(): it deletes every key of the prefix
    else:
        await layer.flush()  # the pub/sub layer's flush only drops its connections


def listen(options):
    layer = the_layer(options)

    async def run():
        channel = await layer.new_channel()
        for group in options.group:
            await layer.group_add(group, channel)

        async def ready():
            if options.layer == "pubsub":
                await subscribed(options, [channel] + [f"{options.prefix}__group__{g}" for g in options.group])
            say(event="ready", channel=channel, groups=options.group)

        try:
            return await collect(layer, channel, options, ready)
        finally:
            for group in options.group:
                try:
                    await layer.group_discard(group, channel)
                except Exception:
                    pass
            await close(layer, options)

    return finish(options, run)


def receive(options):
    layer = the_layer(options)

    async def run():
        async def ready():
            if options.layer == "pubsub":
                await subscribed(options, [options.channel])
            say(event="ready", channel=options.channel)

        try:
            return await collect(layer, options.channel, options, ready)
        finally:
            await close(layer, options)

    return finish(options, run)


def finish(options, run):
    try:
        got = asyncio.run(run())
    except Exception as error:  # a Redis error in receive, say
        say(event="error", error=f"{type(error).__module__}.{type(error).__name__}: {error}")
        return 1
    say(event="done", received=got, wanted=options.count)
    return 0 if got >= options.count else 2


def dump(options):
    """Read only: one JSON line per key under the prefix (the core layer's
    queues and groups are sorted sets)."""
    import redis

    layer = the_layer(options)
    for url in options.redis:
        client = redis.Redis.from_url(url)
        for key in sorted(client.scan_iter(match=options.prefix + "*", count=1000)):
            kind = client.type(key).decode()
            members = []
            if kind == "zset":
                group = b":group:" in key
                for member, score in client.zrange(key, 0, -1, withscores=True):
                    item = {"score": score, "bytes": len(member)}
                    if group:
                        item["channel"] = member.decode("utf-8", "replace")
                    else:
                        try:
                            item["decoded"] = to_json(layer.deserialize(member))
                        except Exception as error:  # what Python could not read, and why
                            item["decode_error"] = f"{type(error).__name__}: {error}"
                    members.append(item)
            entry = {"host": url, "key": key.decode("utf-8", "replace"), "type": kind, "members": members}
            print(json.dumps(entry, ensure_ascii=False))
    return 0


def parser():
    layer = argparse.ArgumentParser(add_help=False)
    layer.add_argument("--redis", action="append", metavar="URL",
                       help="a Redis host, in ring order (default redis://127.0.0.1:6379/0)")
    layer.add_argument("--layer", choices=sorted(LAYERS), default="core")
    layer.add_argument("--prefix", default="asgi")
    layer.add_argument("--capacity", type=int, default=100)
    layer.add_argument("--encryption-key", action="append", default=[], metavar="KEY")
    layer.add_argument("--serializer-format", choices=["msgpack", "json"], default=None)

    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--count", type=int, default=1, help="messages wanted")
    waiting.add_argument("--timeout", type=float, default=10, help="seconds to wait for them")

    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    command = commands.add_parser("send", parents=[layer])
    command.add_argument("--channel", required=True)
    command.add_argument("--json", required=True)
    command.add_argument("--repeat", type=int, default=1)
    command.set_defaults(run=send)
    command = commands.add_parser("group-send", parents=[layer])
    command.add_argument("--group", required=True)
    command.add_argument("--json", required=True)
    command.set_defaults(run=group_send)
    command = commands.add_parser("listen", parents=[layer, waiting])
    command.add_argument("--group", action="append", default=[])
    command.set_defaults(run=listen)
    command = commands.add_parser("receive", parents=[layer, waiting])
    command.add_argument("--channel", required=True)
    command.set_defaults(run=receive)
    command = commands.add_parser("dump", parents=[layer])
    command.set_defaults(run=dump)
    return top


def main():
    logging.basicConfig(level=logging.CRITICAL)
    options = parser().parse_args()
    options.redis = options.redis or ["redis://127.0.0.1:6379/0"]
    return options.run(options)


if __name__ == "__main__":
    sys.exit(main())
