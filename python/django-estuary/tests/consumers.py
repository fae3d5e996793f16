"""The consumers the tests run: each shows one behaviour."""

import asyncio
import json

from channels.exceptions import DenyConnection

from django_estuary.consumer import AsyncJsonEstuaryConsumer, EstuaryConsumer

#: Gates a test opens to let a Gated handler finish: gate name -> Event.
GATES: dict = {}
#: Set when a Gated handler starts waiting: gate name -> Event.
STARTED: dict = {}


def gate(name):
    """A fresh gate and its started-event, for one test."""
    GATES[name] = asyncio.Event()
    STARTED[name] = asyncio.Event()
    return GATES[name], STARTED[name]


class Echo(EstuaryConsumer):
    """Accepts, echoes text and bytes; "yield:N" yields N times first."""

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None and text_data.startswith("yield:"):
            for _ in range(int(text_data.split(":")[1])):
                await asyncio.sleep(0)
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)


class Gated(Echo):
    """"wait:<gate>" waits for the test to open that gate, then answers "done:<gate>"."""

    async def receive(self, text_data=None, bytes_data=None):
        if text_data and text_data.startswith("wait:"):
            name = text_data[5:]
            STARTED[name].set()
            await GATES[name].wait()
            await self.send(text_data=f"done:{name}")
        else:
            await super().receive(text_data, bytes_data)


class OneAtATime(Gated):
    worker_max_connections = 1


class Forgetful(Echo):
    worker_idle_timeout = 0


class Counter(EstuaryConsumer):
    """Counts messages in its state; remembers the room its connect saw."""

    state_attributes = ("room",)

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"].get("room", "none")
        self.state["n"] = 0
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        self.state["n"] += 1
        await self.send(text_data=f"{self.room}:{self.state['n']}")

    async def disconnect(self, code):
        await self.channel_layer.send("witness", {"type": "disconnected", "code": code, "state": self.state})


class Boom(EstuaryConsumer):
    """Raises on "boom" after sending a frame; stores something unsendable on "bad state"."""

    async def receive(self, text_data=None, bytes_data=None):
        self.state["touched"] = True
        if text_data == "boom":
            await self.send(text_data="before")
            raise RuntimeError("the handler failed")
        if text_data == "bad state":
            self.state["when"] = object()
        await self.send(text_data="fine")


class Refuses(EstuaryConsumer):
    async def connect(self):
        await self.close()


class Denies(EstuaryConsumer):
    async def connect(self):
        raise DenyConnection()


class Subprotocol(EstuaryConsumer):
    async def connect(self):
        await self.accept(self.scope["subprotocols"][0])


class Grouped(Echo):
    groups = ["lobby"]


class Handlers(EstuaryConsumer):
    """Handles chat.message events sent to its channel or groups."""

    async def chat_message(self, event):
        self.state["last"] = event["message"]
        await self.send(text_data=json.dumps({"message": event["message"]}))


class Files(EstuaryConsumer):
    """Sends back the bytes of a ``file.chunk`` event: its data, then its parts."""

    async def file_chunk(self, event):
        await self.send(bytes_data=event["data"] + b"".join(event["meta"]["parts"]))


class IntKeys(EstuaryConsumer):
    """Keeps a state JSON would change: an integer key."""

    async def receive(self, text_data=None, bytes_data=None):
        self.state["counts"] = {1: text_data}


class Json(AsyncJsonEstuaryConsumer):
    async def receive_json(self, content):
        await self.send_json({"got": content}, close=content == "bye")


class ScopeReport(EstuaryConsumer):
    """Accepts and sends what it read from its scope."""

    async def connect(self):
        user = self.scope["user"]
        await self.accept()
        await self.send(
            text_data=json.dumps(
                {
                    "authenticated": user.is_authenticated,
                    "pk": user.pk,
                    "username": user.get_username(),
                    "is_staff": user.is_staff,
                    "plan": getattr(user, "plan", None),
                    "query_string": self.scope["query_string"].decode(),
                    "kwargs": self.scope["url_route"]["kwargs"],
                    "query": self.scope["query"],
                    "headers": [[n.decode(), v.decode()] for n, v in self.scope["headers"]],
                    "channel_name": self.channel_name,
                }
            )
        )


class RedisGated(Echo):
    """For the runworker test: "wait:<channel>" waits for a message on that channel."""

    channel_layer_alias = "redis"

    async def receive(self, text_data=None, bytes_data=None):
        if text_data and text_data.startswith("wait:"):
            opened = await self.channel_layer.receive(text_data[5:])
            await self.send(text_data=f"done:{opened['text']}")
        else:
            await super().receive(text_data, bytes_data)
