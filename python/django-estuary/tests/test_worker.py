"""The worker transport: Channels' own Worker serving `as_worker()`, with the
in-memory channel layer playing Estuary's side."""

import asyncio
import json
import unittest

from channels.layers import get_channel_layer

from django_estuary.worker import Dispatcher

from . import consumers
from .harness import FakeEstuary, running_worker, settle

SEND = "websocket.send"


def texts(messages):
    return [m.get("text") for m in messages if m["type"] == SEND]


class WorkerTestCase(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.layer = get_channel_layer()
        await self.layer.flush()
        self.estuary = FakeEstuary(self.layer, "chat")


class AcceptRefuse(WorkerTestCase):
    async def test_the_default_connect_accepts(self):
        async with running_worker(consumers.Echo, self.layer):
            conn = await self.estuary.open()
            self.assertEqual(await conn.connect(), [{"type": "websocket.accept"}])
            self.assertEqual(await conn.receive("hi"), [{"type": SEND, "text": "hi"}])
            self.assertEqual(await conn.receive(bytes=b"\x00\xff"), [{"type": SEND, "bytes": b"\x00\xff"}])

    async def test_close_in_connect_refuses(self):
        async with running_worker(consumers.Refuses, self.layer):
            conn = await self.estuary.open()
            self.assertEqual(await conn.connect(), [{"type": "websocket.close"}])

    async def test_deny_connection_refuses(self):
        async with running_worker(consumers.Denies, self.layer):
            conn = await self.estuary.open()
            self.assertEqual(await conn.connect(), [{"type": "websocket.close"}])

    async def test_accept_with_a_subprotocol(self):
        async with running_worker(consumers.Subprotocol, self.layer):
            conn = await self.estuary.open(subprotocols=["chat.v2", "chat.v1"])
            self.assertEqual(await conn.connect(), [{"type": "websocket.accept", "subprotocol": "chat.v2"}])


class Order(WorkerTestCase):
    async def test_one_connections_events_run_in_order(self):
        # Events queued at once (as after a reply timeout): the first takes the
        # longest, yet each is answered and acknowledged before the next.
        async with running_worker(consumers.Echo, self.layer):
            conn = await self.estuary.open()
            await conn.connect()
            sent = [f"yield:{n}" for n in (50, 20, 5, 0)]
            seqs = [await conn.send_event("websocket.receive", text=t) for t in sent]
            got = [await conn.next() for _ in range(2 * len(sent))]
            self.assertEqual(
                [(m["type"], m.get("text", m.get("seq"))) for m in got],
                [pair for t, s in zip(sent, seqs) for pair in ((SEND, t), ("estuary.ack", s))],
            )


class Concurrency(WorkerTestCase):
    async def test_a_slow_handler_does_not_hold_up_other_connections(self):
        gate, started = consumers.gate("a")
        async with running_worker(consumers.Gated, self.layer):
            a, b = await self.estuary.open(), await self.estuary.open()
            await a.connect()
            await b.connect()
            slow = await a.send_event("websocket.receive", text="wait:a")
            await asyncio.wait_for(started.wait(), 10)
            # a is inside its handler; b is served meanwhile, more than once.
            self.assertEqual(texts(await b.receive("one")), ["one"])
            self.assertEqual(texts(await b.receive("two")), ["two"])
            gate.set()
            self.assertEqual(texts(await a.until_ack(slow)), ["done:a"])

    async def test_the_number_of_running_connections_is_bounded(self):
        gate, started = consumers.gate("bound")
        dispatcher = Dispatcher(consumers.Gated, {}, max_connections=1, idle_timeout=60)
        a, b = await self.estuary.open(), await self.estuary.open()
        try:
            await dispatcher.put({"type": "websocket.receive", "channel": a.channel, "seq": 1, "scope": a.scope, "text": "wait:bound"})
            await asyncio.wait_for(started.wait(), 10)
            put_b = asyncio.ensure_future(
                dispatcher.put({"type": "websocket.connect", "channel": b.channel, "seq": 0, "scope": b.scope})
            )
            for _ in range(50):
                await asyncio.sleep(0)
            self.assertFalse(put_b.done(), "b started while a's handler held the only slot")
            self.assertNotIn(b.channel, dispatcher.connections)
            gate.set()
            self.assertEqual(texts(await a.until_ack(1)), ["done:bound"])
            await asyncio.wait_for(put_b, 10)
            self.assertEqual(await b.until_ack(0), [{"type": "websocket.accept"}])
        finally:
            await dispatcher.close()

    async def test_an_idle_connection_is_forgotten_for_a_new_one(self):
        # One slot: b's connect evicts idle a; a's next event comes back to a
        # fresh task, with the state Estuary kept.
        async with running_worker(consumers.OneAtATime, self.layer):
            a, b = await self.estuary.open(), await self.estuary.open()
            await a.connect()
            await b.connect()
            self.assertEqual(texts(await a.receive("again")), ["again"])
            self.assertEqual(texts(await b.receive("me too")), ["me too"])


class Forgetting(WorkerTestCase):
    async def test_the_bounds_may_be_given_to_as_worker(self):
        app = consumers.Echo.as_worker(worker_max_connections=3, worker_idle_timeout=5)
        with self.assertRaises(TypeError):
            consumers.Echo.as_worker(no_such_attribute=1)
        received = asyncio.Queue()
        task = asyncio.ensure_future(app({"type": "channel", "channel": "chat"}, received.get, None))
        conn = await self.estuary.open()
        await received.put({"type": "websocket.connect", "channel": conn.channel, "seq": 0, "scope": conn.scope})
        self.assertEqual(await conn.until_ack(0), [{"type": "websocket.accept"}])
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def test_a_connection_is_forgotten_after_its_disconnect(self):
        dispatcher = Dispatcher(consumers.Counter, {}, max_connections=10, idle_timeout=60)
        conn = await self.estuary.open()
        try:
            await dispatcher.put({"type": "websocket.connect", "channel": conn.channel, "seq": 0, "scope": conn.scope})
            await conn.until_ack(0)
            self.assertIn(conn.channel, dispatcher.connections)
            await dispatcher.put(
                {"type": "websocket.disconnect", "channel": conn.channel, "seq": 1, "scope": conn.scope, "state": conn.state, "code": 1001}
            )
            witness = await asyncio.wait_for(self.layer.receive("witness"), 10)
            self.assertEqual(witness["code"], 1001)
            await settle(lambda: not dispatcher.connections)
        finally:
            await dispatcher.close()

    async def test_an_idle_connection_is_forgotten_after_the_timeout(self):
        dispatcher = Dispatcher(consumers.Forgetful, {}, max_connections=10, idle_timeout=0)
        conn = await self.estuary.open()
        try:
            await dispatcher.put({"type": "websocket.connect", "channel": conn.channel, "seq": 0, "scope": conn.scope})
            await conn.until_ack(0)
            await settle(lambda: not dispatcher.connections)
            await dispatcher.put({"type": "websocket.receive", "channel": conn.channel, "seq": 1, "scope": conn.scope, "text": "back"})
            self.assertEqual(texts(await conn.until_ack(1)), ["back"])
        finally:
            await dispatcher.close()


class State(WorkerTestCase):
    async def test_state_round_trips_through_estuary(self):
        async with running_worker(consumers.Counter, self.layer):
            conn = await self.estuary.open(kwargs={"room": "lobby"})
            await conn.connect()
            self.assertEqual(conn.state, {"n": 0, "room": "lobby"})
            self.assertEqual(texts(await conn.receive("x")), ["lobby:1"])
        # Another worker process (a new Worker, nothing shared) carries on.
        async with running_worker(consumers.Counter, self.layer):
            self.assertEqual(texts(await conn.receive("y")), ["lobby:2"])
            self.assertEqual(conn.state, {"n": 2, "room": "lobby"})
            await conn.disconnect(1000)
            witness = await asyncio.wait_for(self.layer.receive("witness"), 10)
            self.assertEqual((witness["code"], witness["state"]), (1000, {"n": 2, "room": "lobby"}))

    async def test_the_disconnect_is_not_acknowledged(self):
        async with running_worker(consumers.Counter, self.layer):
            conn = await self.estuary.open()
            await conn.connect()
            await conn.disconnect(1006)
            await asyncio.wait_for(self.layer.receive("witness"), 10)
            # Nothing came for the disconnect: the next message is one sent now.
            await self.layer.send(conn.channel, {"type": "marker"})
            self.assertEqual(await conn.next(), {"type": "marker"})


class Failures(WorkerTestCase):
    async def test_a_handler_that_raises_closes_with_1011_and_logs_the_traceback(self):
        async with running_worker(consumers.Boom, self.layer):
            conn = await self.estuary.open()
            await conn.connect()
            conn.state = {"kept": 1}
            with self.assertLogs("django_estuary", "ERROR") as logs:
                replies = await conn.receive("boom")
            self.assertEqual(replies, [{"type": SEND, "text": "before"}, {"type": "websocket.close", "code": 1011}])
            self.assertEqual(conn.state, {"kept": 1}, "the state before the failed event")
            self.assertIn("RuntimeError: the handler failed", logs.output[0])
            self.assertIn("Traceback", logs.output[0])

    async def test_state_that_json_cannot_carry_closes_with_1011(self):
        async with running_worker(consumers.Boom, self.layer):
            conn = await self.estuary.open()
            await conn.connect()
            with self.assertLogs("django_estuary", "ERROR") as logs:
                replies = await conn.receive("bad state")
            self.assertEqual(replies[-1], {"type": "websocket.close", "code": 1011})
            self.assertIn("only JSON values", logs.output[0])

    async def test_a_malformed_event_with_a_channel_is_closed_and_acknowledged(self):
        async with running_worker(consumers.Echo, self.layer):
            conn = await self.estuary.open()
            conn.scope = "not a map"
            with self.assertLogs("django_estuary", "ERROR"):
                self.assertEqual(await conn.connect(), [{"type": "websocket.close", "code": 1011}])

    async def test_a_message_without_a_connection_is_dropped_with_a_warning(self):
        async with running_worker(consumers.Echo, self.layer):
            with self.assertLogs("django_estuary", "WARNING") as logs:
                await self.layer.send("chat", {"type": "websocket.connect", "seq": 0})
                conn = await self.estuary.open()
                await conn.connect()
            self.assertIn("dropped a message", logs.output[0])

    async def test_an_unknown_event_type_is_acknowledged_without_a_call(self):
        async with running_worker(consumers.Echo, self.layer):
            conn = await self.estuary.open()
            await conn.connect()
            with self.assertLogs("django_estuary", "WARNING"):
                self.assertEqual(await conn.event("estuary.from-the-future"), [])


class Dispatch(WorkerTestCase):
    async def test_estuary_events_are_dispatched_by_type(self):
        async with running_worker(consumers.Handlers, self.layer):
            conn = await self.estuary.open()
            await conn.connect()
            replies = await conn.deliver({"type": "chat.message", "message": "hello"})
            self.assertEqual(texts(replies), ['{"message": "hello"}'])
            self.assertEqual(conn.state, {"last": "hello"})

    async def test_an_event_without_a_handler_closes_with_1011(self):
        async with running_worker(consumers.Handlers, self.layer):
            conn = await self.estuary.open()
            await conn.connect()
            with self.assertLogs("django_estuary", "ERROR") as logs:
                replies = await conn.deliver({"type": "user.join", "username": "x"})
            self.assertEqual(replies, [{"type": "websocket.close", "code": 1011}])
            self.assertIn("No handler for message type user.join", logs.output[0])

    async def test_class_groups_are_joined_on_connect_and_left_on_disconnect(self):
        async with running_worker(consumers.Grouped, self.layer):
            conn = await self.estuary.open()
            await conn.connect()
            await self.layer.group_send("lobby", {"type": SEND, "text": "to the group"})
            self.assertEqual(await conn.next(), {"type": SEND, "text": "to the group"})
            await conn.disconnect()
            await settle(lambda: conn.channel not in self.layer.groups.get("lobby", {}))
            await self.layer.group_send("lobby", {"type": SEND, "text": "after"})
            await self.layer.send(conn.channel, {"type": "marker"})
            self.assertEqual(await conn.next(), {"type": "marker"})

    async def test_json_consumer(self):
        async with running_worker(consumers.Json, self.layer):
            conn = await self.estuary.open()
            await conn.connect()
            self.assertEqual(texts(await conn.receive('{"a": [1, 2]}')), ['{"got": {"a": [1, 2]}}'])
            self.assertEqual(await conn.receive('"bye"'), [{"type": SEND, "text": '{"got": "bye"}'}, {"type": "websocket.close"}])
            with self.assertLogs("django_estuary", "ERROR"):
                replies = await conn.receive("not json")
            self.assertEqual(replies, [{"type": "websocket.close", "code": 1011}])


class Scope(WorkerTestCase):
    async def test_the_scope_is_channels_shaped(self):
        async with running_worker(consumers.ScopeReport, self.layer):
            user = {"id": "42", "name": "alice", "attributes": {"is_staff": True, "plan": "pro"}}
            conn = await self.estuary.open(
                path="/ws/chat/lobby/", kwargs={"room_name": "lobby"}, user=user, query_string="a=1&b=2", query={"llm": "gpt-4o"}
            )
            replies = await conn.connect()
            self.assertEqual(replies[0], {"type": "websocket.accept"})
            self.assertEqual(
                json.loads(replies[1]["text"]),
                {
                    "authenticated": True,
                    "pk": 42,
                    "username": "alice",
                    "is_staff": True,
                    "plan": "pro",
                    "query_string": "a=1&b=2",
                    "kwargs": {"room_name": "lobby"},
                    "query": {"llm": "gpt-4o"},
                    "headers": [["origin", "http://127.0.0.1:8000"]],
                    "channel_name": conn.channel,
                },
            )

    async def test_an_anonymous_scope(self):
        async with running_worker(consumers.ScopeReport, self.layer):
            conn = await self.estuary.open(query_string=b"x=1")
            report = json.loads((await conn.connect())[1]["text"])
            self.assertEqual(
                (report["authenticated"], report["pk"], report["username"], report["is_staff"], report["plan"], report["query_string"]),
                (False, None, "", False, None, "x=1"),
            )
