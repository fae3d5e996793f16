"""The chat consumer against docs/CHAT.md, with the in-memory layer playing
Estuary's side (django_estuary.testing) and Channels' worker serving it."""

import json
import unittest

from channels.layers import get_channel_layer
from django.core.cache import cache

from django_estuary.testing import FakeEstuary, running_worker, user

from .consumers import ChatConsumer

SEND = "websocket.send"


def frames(messages):
    """The JSON frames among the messages."""
    return [json.loads(m["text"]) for m in messages if m["type"] == SEND]


class ChatTestCase(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        cache.clear()
        self.layer = get_channel_layer()
        await self.layer.flush()
        self.worker = running_worker(ChatConsumer, self.layer, "chat")
        await self.worker.__aenter__()
        self.estuary = FakeEstuary(self.layer, "chat")

    async def asyncTearDown(self):
        await self.worker.__aexit__(None, None, None)

    async def member(self, room="lobby", query_string="", who=None):
        conn = await self.estuary.open(path=f"/ws/chat/{room}/", kwargs={"room_name": room}, query_string=query_string, user=who)
        return conn, await conn.connect()

    async def assert_error(self, conn, text, message):
        self.assertEqual(frames(await conn.receive(text)), [{"type": "error", "message": message}])


class Connect(ChatTestCase):
    async def test_a_guest_without_a_name_is_welcomed_silently(self):
        _, replies = await self.member()
        self.assertEqual(replies[0], {"type": "websocket.accept"})
        self.assertEqual(frames(replies), [{"type": "connection_established", "message": "Connected to chat room"}])

    async def test_a_named_guest_is_announced(self):
        _, replies = await self.member(query_string="username=bob")
        self.assertEqual(
            frames(replies)[1], {"type": "user_join", "username": "bob", "message": "bob joined the room"}
        )

    async def test_a_signed_in_member_is_announced_verified(self):
        _, replies = await self.member(who=user(7, "alice"))
        self.assertEqual(
            frames(replies)[1],
            {"type": "user_join", "username": "alice", "message": "alice joined the room", "verified": True},
        )

    async def test_an_invalid_room_is_refused_before_accept(self):
        for room in ["a.b", "r" * 95, "caf\u00e9"]:
            _, replies = await self.member(room=room)
            self.assertEqual(replies, [{"type": "websocket.close", "reason": "invalid room name"}], room)

    async def test_a_signed_in_member_naming_someone_else_is_refused(self):
        _, replies = await self.member(query_string="username=mallory", who=user(7, "alice"))
        self.assertEqual(replies, [{"type": "websocket.close", "reason": "username does not match the signed-in user"}])
        _, replies = await self.member(query_string="username=alice", who=user(7, "alice"))
        self.assertEqual(replies[0], {"type": "websocket.accept"})

    async def test_a_bad_guest_name_is_told_then_closed_4400(self):
        for name, reason in [
            ("%E2%80%AEecila", "Invalid username: control, bidirectional or invisible characters are not allowed"),
            ("%E2%80%8B%E2%80%8B", "Invalid username: control, bidirectional or invisible characters are not allowed"),
            ("u" * 51, "Invalid username: over 50 characters"),
        ]:
            _, replies = await self.member(query_string=f"username={name}")
            self.assertEqual(
                replies,
                [
                    {"type": "websocket.accept"},
                    {"type": SEND, "text": json.dumps({"type": "error", "message": reason})},
                    {"type": "websocket.close", "code": 4400, "reason": reason},
                ],
            )

    async def test_a_guest_may_not_take_a_signed_in_members_name(self):
        await self.member(who=user(7, "alice"))
        taken = "This name belongs to a signed-in member of the room; choose another"
        for lookalike in ["ALICE", "alice%E2%80%8B", "%EF%BD%81%EF%BD%8C%EF%BD%89%EF%BD%83%EF%BD%85"]:
            _, replies = await self.member(query_string=f"username={lookalike}")
            self.assertEqual(replies[-1], {"type": "websocket.close", "code": 4409, "reason": taken}, lookalike)
        # In another room the name is free.
        _, replies = await self.member(room="other", query_string="username=alice")
        self.assertEqual(frames(replies)[0]["type"], "connection_established")


class Messages(ChatTestCase):
    async def test_a_message_reaches_every_member_once_rendered(self):
        a, _ = await self.member()
        b, _ = await self.member()
        sent = frames(await a.receive(json.dumps({"message": "  hello  ", "username": "bob"})))
        self.assertEqual(len(sent), 1)
        frame = sent[0]
        self.assertEqual((frame["type"], frame["message"], frame["username"]), ("chat_message", "hello", "bob"))
        self.assertRegex(frame["id"], r"^[0-9a-f]{32}$")
        self.assertIsInstance(frame["ts"], int)
        self.assertNotIn("verified", frame)
        self.assertEqual(frames([await b.next()]), [frame])

    async def test_guests_default_to_anonymous(self):
        a, _ = await self.member()
        for username in [None, "", "   "]:
            body = {"message": "hi"} if username is None else {"message": "hi", "username": username}
            self.assertEqual(frames(await a.receive(json.dumps(body)))[0]["username"], "Anonymous")

    async def test_a_signed_in_members_messages_are_verified_under_its_name(self):
        a, _ = await self.member(who=user(7, "alice"))
        frame = frames(await a.receive('{"message": "hi"}'))[0]
        self.assertEqual((frame["username"], frame["verified"]), ("alice", True))
        frame = frames(await a.receive('{"message": "hi", "username": "alice"}'))[0]
        self.assertEqual(frame["username"], "alice")
        await self.assert_error(a, '{"message": "hi", "username": "bob"}', "username does not match the signed-in user")

    async def test_bad_input_gets_error_frames_and_the_connection_stays(self):
        a, _ = await self.member()
        for text in ["not json", "[1, 2]", '"hi"', "{"]:
            await self.assert_error(a, text, "Invalid JSON format")
        for body in [{}, {"message": 5}, {"message": "   "}, {"message": "x" * 1001}, {"message": "hi", "username": 5}, {"message": "hi", "username": "u" * 51}]:
            await self.assert_error(a, json.dumps(body), "Invalid message")
        await self.assert_error(
            a, json.dumps({"message": "hi", "username": "a\nb"}), "Invalid username: control, bidirectional or invisible characters are not allowed"
        )
        self.assertEqual(frames(await a.receive(bytes=b"\x00")), [{"type": "error", "message": "Binary messages are not supported"}])
        self.assertEqual(frames(await a.receive(json.dumps({"message": "x" * 1000})))[0]["type"], "chat_message")

    async def test_a_guest_frame_may_not_use_a_signed_in_name(self):
        await self.member(who=user(7, "alice"))
        guest, _ = await self.member()
        await self.assert_error(guest, '{"message": "hi", "username": "Alice"}', "This name belongs to a signed-in member of the room; choose another")


class Leaving(ChatTestCase):
    async def test_a_named_member_leaving_is_announced_and_its_name_freed(self):
        alice, _ = await self.member(who=user(7, "alice"))
        watcher, _ = await self.member()
        await alice.disconnect(1000)
        self.assertEqual(
            frames([await watcher.next()]),
            [{"type": "user_leave", "username": "alice", "message": "alice left the room", "verified": True}],
        )
        self.assertEqual(frames(await watcher.receive('{"message": "hi", "username": "alice"}'))[0]["username"], "alice")
        # alice no longer gets the room's messages.
        self.assertNotIn(alice.channel, self.layer.groups.get("chat_lobby", {}))


class FromDjango(ChatTestCase):
    """Events other Django code sends into the room (docs/DJANGO.md)."""

    async def test_chat_message_join_and_leave_events_are_rendered(self):
        a, _ = await self.member()
        frame = frames(await a.deliver({"type": "chat.message", "message": "from a view"}))[0]
        self.assertEqual((frame["message"], frame["username"]), ("from a view", "Anonymous"))
        self.assertRegex(frame["id"], r"^[0-9a-f]{32}$")
        frame = frames(await a.deliver({"type": "chat.message", "message": "m", "username": "ops", "id": "f" * 32, "ts": 5, "verified": True}))[0]
        self.assertEqual(frame, {"type": "chat_message", "message": "m", "username": "ops", "id": "f" * 32, "ts": 5, "verified": True})
        users = [{"username": "m1"}, {"username": "m2", "verified": True}, {"username": "m3"}, {"username": "m4"}]
        frame = frames(await a.deliver({"type": "user.join", "username": "m1", "users": users}))[0]
        self.assertEqual(frame["message"], "m1, m2 and 2 others joined the room")
        self.assertEqual(frame["users"], users)
        frame = frames(await a.deliver({"type": "user.leave", "username": "solo"}))[0]
        self.assertEqual(frame, {"type": "user_leave", "username": "solo", "message": "solo left the room"})
