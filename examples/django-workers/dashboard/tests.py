import asyncio
import json
import time
import unittest

from channels.layers import get_channel_layer
from django.core.cache import cache
from django.test import AsyncClient

from django_estuary.signing import sign
from django_estuary.testing import FakeEstuary, running_worker

from .consumers import DashboardConsumer

TOKEN = {"Authorization": "Bearer the push token of the example's tests"}


def frames(messages):
    return [json.loads(m["text"]) for m in messages if m["type"] == "websocket.send"]


class Dashboard(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        cache.clear()
        self.layer = get_channel_layer()
        await self.layer.flush()
        self.worker = running_worker(DashboardConsumer, self.layer, "dashboard")
        await self.worker.__aenter__()
        self.estuary = FakeEstuary(self.layer, "dashboard")

    async def asyncTearDown(self):
        await self.worker.__aexit__(None, None, None)

    async def open(self):
        conn = await self.estuary.open(path="/ws/dashboard/")
        self.assertEqual(frames(await conn.connect())[0]["type"], "ready")
        return conn

    async def push(self, metric, body):
        return await AsyncClient().post(f"/dashboard/metrics/{metric}/", data=json.dumps(body), content_type="application/json", headers=TOKEN)

    async def ask(self, conn, request):
        return frames(await conn.receive(json.dumps(request)))

    async def test_subscribers_get_pushed_updates_and_others_do_not(self):
        subscriber, bystander = await self.open(), await self.open()
        self.assertEqual(await self.ask(subscriber, {"type": "subscribe", "metric": "sales"}), [{"type": "subscribed", "metric": "sales", "last": None}])
        response = await self.push("sales", {"value": 42})
        self.assertEqual(response.status_code, 202)
        # Estuary writes the group's websocket.send to the socket as it is.
        update = json.loads((await subscriber.next())["text"])
        self.assertEqual((update["type"], update["metric"], update["value"]), ("update", "sales", 42))
        await self.layer.send(bystander.channel, {"type": "marker"})
        self.assertEqual(await bystander.next(), {"type": "marker"})
        self.assertEqual((await self.ask(bystander, {"type": "get", "metric": "sales"}))[0]["last"]["value"], 42)

    async def test_unsubscribe_and_disconnect_leave_the_groups(self):
        conn = await self.open()
        for metric in ("cpu", "sales"):
            await self.ask(conn, {"type": "subscribe", "metric": metric})
        self.assertEqual(conn.state["subscriptions"], ["cpu", "sales"])
        self.assertEqual(await self.ask(conn, {"type": "unsubscribe", "metric": "cpu"}), [{"type": "unsubscribed", "metric": "cpu"}])
        self.assertNotIn(conn.channel, self.layer.groups.get("metric.cpu", {}))
        await conn.disconnect()
        # The disconnect is not acknowledged: let the worker run until it has left.
        for _ in range(200):
            if conn.channel not in self.layer.groups.get("metric.sales", {}):
                break
            await asyncio.sleep(0)
        self.assertNotIn(conn.channel, self.layer.groups.get("metric.sales", {}))

    async def test_typed_errors(self):
        conn = await self.open()
        cases = [
            ("not json", None, "send a JSON object with a type"),
            ({"type": "dance"}, "dance", "unknown request type"),
            ({"metric": "sales"}, None, "unknown request type"),
            ({"type": "get", "metric": "Sales!"}, "get", "metric must be 1-50 of a-z 0-9 _ . -"),
            ({"type": "unsubscribe", "metric": "sales"}, "unsubscribe", "not subscribed to sales"),
        ]
        for request, request_type, message in cases:
            text = request if isinstance(request, str) else json.dumps(request)
            self.assertEqual(frames(await conn.receive(text)), [{"type": "error", "message": message, "request_type": request_type}], request)

    async def test_the_push_view_checks_its_token_and_body(self):
        client = AsyncClient()
        self.assertEqual((await client.post("/dashboard/metrics/sales/", data='{"value": 1}', content_type="application/json")).status_code, 401)
        for body in [{"value": "1"}, {"value": True}, {}, ["value"]]:
            self.assertEqual((await self.push("sales", body)).status_code, 400, body)
        self.assertEqual((await self.push("Sales", {"value": 1})).status_code, 400)

    async def test_the_http_transport_answers_the_same(self):
        # A route with http = ".../estuary/events/dashboard/" instead of channel = "dashboard".
        async def post(event):
            body = json.dumps({**event, "time": int(time.time())}).encode()
            signature = sign(body, "the callback secret of the example's tests")
            response = await AsyncClient().post(
                "/estuary/events/dashboard/", data=body, content_type="application/json", headers={"X-Estuary-Signature": signature}
            )
            self.assertEqual(response.status_code, 200)
            return response.json()

        base = {"channel": "specific.estuary!http1", "scope": {"path": "/ws/dashboard/", "user": None}}
        answer = await post({**base, "type": "websocket.connect", "seq": 0, "state": {}})
        self.assertEqual(answer["messages"][0], {"type": "websocket.accept"})
        answer = await post({**base, "type": "websocket.receive", "seq": 1, "state": answer["state"], "text": '{"type": "subscribe", "metric": "cpu"}'})
        self.assertEqual(json.loads(answer["messages"][0]["text"])["type"], "subscribed")
        self.assertEqual(answer["state"], {"subscriptions": ["cpu"]})
        self.assertIn("specific.estuary!http1", self.layer.groups["metric.cpu"])
