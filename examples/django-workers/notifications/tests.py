import json
import unittest

from channels.layers import get_channel_layer
from django.test import AsyncClient

from django_estuary.testing import FakeEstuary, running_worker, user

from .consumers import NotificationConsumer

TOKEN = {"Authorization": "Bearer the push token of the example's tests"}


def frames(messages):
    return [json.loads(m["text"]) for m in messages if m["type"] == "websocket.send"]


class Notifications(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.layer = get_channel_layer()
        await self.layer.flush()
        self.worker = running_worker(NotificationConsumer, self.layer, "notifications")
        await self.worker.__aenter__()
        self.estuary = FakeEstuary(self.layer, "notifications")

    async def asyncTearDown(self):
        await self.worker.__aexit__(None, None, None)

    async def open(self, user_id=7):
        conn = await self.estuary.open(path="/ws/notifications/", user=user(user_id, "alice"), groups=[f"user.{user_id}"])
        # Estuary joins the route's groups ("user.{user.id}") before connect.
        await self.layer.group_add(f"user.{user_id}", conn.channel)
        return conn

    async def notify(self, user_id, body):
        return await AsyncClient().post(f"/notify/{user_id}/", data=json.dumps(body), content_type="application/json", headers=TOKEN)

    async def next_event(self, conn):
        """The next group message, handed to the worker as Estuary does."""
        return await conn.deliver(await conn.next())

    async def test_anonymous_sockets_are_refused(self):
        conn = await self.estuary.open(path="/ws/notifications/")
        self.assertEqual(await conn.connect(), [{"type": "websocket.close"}])

    async def test_a_notification_reaches_every_socket_of_the_user_only(self):
        first, second, other = await self.open(7), await self.open(7), await self.open(8)
        for conn in (first, second, other):
            self.assertEqual(frames(await conn.connect())[0]["type"], "ready")
        response = await self.notify(7, {"title": "Your order shipped", "body": "#1234"})
        self.assertEqual(response.status_code, 202)
        for conn in (first, second):
            frame = frames(await self.next_event(conn))[0]
            self.assertEqual((frame["type"], frame["title"], frame["body"], frame["id"]), ("notification", "Your order shipped", "#1234", response.json()["id"]))
        await self.layer.send(other.channel, {"type": "marker"})
        self.assertEqual(await other.next(), {"type": "marker"}, "user 8 got user 7's notification")

    async def test_a_muted_socket_counts_what_it_missed(self):
        conn = await self.open()
        await conn.connect()
        self.assertEqual(frames(await conn.receive('{"type": "mute", "muted": true}')), [{"type": "muted", "muted": True, "missed": 0}])
        await self.notify(7, {"title": "one"})
        self.assertEqual(await self.next_event(conn), [])
        self.assertEqual(frames(await conn.receive('{"type": "mute", "muted": false}')), [{"type": "muted", "muted": False, "missed": 1}])
        await self.notify(7, {"title": "two"})
        self.assertEqual(frames(await self.next_event(conn))[0]["title"], "two")

    async def test_bad_requests(self):
        conn = await self.open()
        await conn.connect()
        self.assertEqual(frames(await conn.receive("nope"))[0]["type"], "error")
        self.assertEqual(frames(await conn.receive('{"type": "dance"}'))[0]["type"], "error")
        client = AsyncClient()
        self.assertEqual((await client.post("/notify/7/", data="{}", content_type="application/json")).status_code, 401)
        self.assertEqual((await self.notify(7, {"title": ""})).status_code, 400)
        self.assertEqual((await self.notify(7, {"body": "no title"})).status_code, 400)
        self.assertEqual((await client.get("/notify/7/", headers=TOKEN)).status_code, 405)
