import asyncio
import json
import unittest
from unittest import mock

from channels.layers import get_channel_layer

from django_estuary.testing import FakeEstuary, running_worker

from . import model
from .consumers import AssistantConsumer

# What the route in estuary.toml declares: Estuary fills in the defaults.
DEFAULTS = {"llm": "gpt-4o", "character_id": "1"}


def frames(messages):
    return [json.loads(m["text"]) for m in messages if m["type"] == "websocket.send"]


class Assistant(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.layer = get_channel_layer()
        await self.layer.flush()
        self.worker = running_worker(AssistantConsumer, self.layer, "assistant")
        await self.worker.__aenter__()
        self.estuary = FakeEstuary(self.layer, "assistant")

    async def asyncTearDown(self):
        await self.worker.__aexit__(None, None, None)

    async def open(self, **query):
        conn = await self.estuary.open(path="/ws/assistant/", query={**DEFAULTS, **query})
        return conn, await conn.connect()

    async def test_the_route_defaults_choose_the_model_and_character(self):
        _, replies = await self.open()
        self.assertEqual(
            frames(replies), [{"type": "ready", "llm": "gpt-4o", "character_id": 1, "character": "Ada", "persona": "a patient tutor"}]
        )
        _, replies = await self.open(llm="llama3", character_id="2")
        self.assertEqual(frames(replies)[0]["character"], "Blaise")

    async def test_unknown_models_and_characters_are_refused(self):
        for query in [{"llm": "gpt-9"}, {"character_id": "99"}, {"character_id": "one"}]:
            _, replies = await self.open(**query)
            self.assertEqual(len(replies), 1, query)
            self.assertEqual(replies[0]["type"], "websocket.close", query)

    async def test_a_reply_is_streamed_in_chunks_then_done(self):
        conn, _ = await self.open()
        replies = frames(await conn.receive('{"message": "tell me about rivers"}'))
        self.assertGreater(len(replies), 3)
        self.assertEqual(replies[-1], {"type": "done", "turn": 1})
        self.assertTrue(all(r["type"] == "chunk" for r in replies[:-1]))
        self.assertEqual("".join(r["text"] for r in replies[:-1]), model.reply("gpt-4o", 1, "tell me about rivers"))
        self.assertEqual(frames(await conn.receive('{"message": "and lakes?"}'))[-1], {"type": "done", "turn": 2})

    async def test_a_stream_does_not_block_other_connections(self):
        gate, held = asyncio.Event(), asyncio.Event()
        pauses = 0

        async def pause():
            # The first pause (the first stream's, after its first chunk) waits for the gate.
            nonlocal pauses
            pauses += 1
            if pauses == 1:
                held.set()
                await gate.wait()

        with mock.patch.object(model, "pause", pause):
            slow, _ = await self.open()
            fast, _ = await self.open(character_id="3")
            seq = await slow.send_event("websocket.receive", text='{"message": "a long one"}')
            await asyncio.wait_for(held.wait(), 10)
            # slow's stream is held after its first chunk; fast streams its whole reply.
            self.assertEqual(frames(await fast.receive('{"message": "quick"}'))[-1], {"type": "done", "turn": 1})
            gate.set()
            replies = frames(await slow.until_ack(seq))
        self.assertEqual("".join(r["text"] for r in replies[:-1]), model.reply("gpt-4o", 1, "a long one"))

    async def test_bad_requests_get_an_error(self):
        conn, _ = await self.open()
        for text in ["hello", '{"message": ""}', '{"message": 3}', "[]"]:
            self.assertEqual(frames(await conn.receive(text))[0]["type"], "error", text)
        self.assertEqual(conn.state["turns"], 0)
