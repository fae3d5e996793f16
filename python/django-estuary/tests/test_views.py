"""The HTTP transport (events_view) and the connect callback (ConnectView)."""

import base64
import json
import time

from django.contrib.auth.models import User
from django.test import AsyncClient, Client, SimpleTestCase, TestCase, override_settings

from django_estuary.signing import sign

EVENTS_SECRET = "the events secret of the tests"
CALLBACK_SECRET = "the callback secret of the tests"


def event(kind, seq=0, **extra):
    body = {
        "type": kind,
        "channel": "specific.estuary!conn1",
        "seq": seq,
        "scope": {"path": "/ws/x/", "query_string": "", "user": None},
        "state": {},
        "time": int(time.time()),
    }
    body.update(extra)
    return body


class EventsView(SimpleTestCase):
    async def post(self, payload, url="/estuary/events/", secret=EVENTS_SECRET, signature=None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"X-Estuary-Signature": signature if signature is not None else sign(body, secret)}
        return await AsyncClient().post(url, data=body, content_type="application/json", headers=headers)

    async def test_connect_is_answered_with_the_messages_and_the_state(self):
        response = await self.post(event("websocket.connect"))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"messages": [{"type": "websocket.accept"}], "state": {}})

    async def test_text_and_bytes(self):
        response = await self.post(event("websocket.receive", 1, text="hi"))
        self.assertEqual(response.json()["messages"], [{"type": "websocket.send", "text": "hi"}])
        data = base64.b64encode(b"\x00\x01\xff").decode()
        response = await self.post(event("websocket.receive", 2, bytes=data))
        self.assertEqual(response.json()["messages"], [{"type": "websocket.send", "bytes": data}])

    async def test_state_and_estuary_events(self):
        payload = event("estuary.event", 3, event={"type": "chat.message", "message": "yo"}, state={"old": 1})
        response = await self.post(payload, url="/estuary/handlers/")
        self.assertEqual(
            response.json(),
            {"messages": [{"type": "websocket.send", "text": '{"message": "yo"}'}], "state": {"old": 1, "last": "yo"}},
        )

    async def test_bytes_in_a_forwarded_message_are_bytes_again(self):
        tag = lambda data: {"$bytes": base64.b64encode(data).decode()}  # noqa: E731
        inner = {"type": "file.chunk", "data": tag(b"\x00\xff"), "meta": {"parts": [tag(b"\x01"), tag(b"\x02")]}}
        response = await self.post(event("estuary.event", 4, event=inner), url="/estuary/files/")
        self.assertEqual(response.json()["messages"], [{"type": "websocket.send", "bytes": base64.b64encode(b"\x00\xff\x01\x02").decode()}])

    async def test_a_handler_that_raises_is_answered_with_1011(self):
        with self.assertLogs("django_estuary", "ERROR"):
            response = await self.post(event("websocket.receive", 1, text="boom", state={"kept": True}), url="/estuary/boom/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(),
            {
                "messages": [{"type": "websocket.send", "text": "before"}, {"type": "websocket.close", "code": 1011}],
                "state": {"kept": True},
            },
        )

    async def test_a_state_with_a_key_that_is_not_a_string_is_refused_with_1011(self):
        with self.assertLogs("django_estuary", "ERROR") as logs:
            response = await self.post(event("websocket.receive", 1, text="x", state={"kept": True}), url="/estuary/int-keys/")
        self.assertIn("string keys", "\n".join(logs.output))
        self.assertEqual(response.json(), {"messages": [{"type": "websocket.close", "code": 1011}], "state": {"kept": True}})

    async def test_bad_base64_closes_with_1011(self):
        with self.assertLogs("django_estuary", "ERROR"):
            response = await self.post(event("websocket.receive", 1, bytes="***"))
        self.assertEqual(response.json()["messages"], [{"type": "websocket.close", "code": 1011}])

    async def test_signature_and_time_are_checked(self):
        with self.assertLogs("django_estuary", "WARNING"):
            self.assertEqual((await self.post(event("websocket.connect"), secret="another secret entirely")).status_code, 403)
            self.assertEqual((await self.post(event("websocket.connect"), signature="")).status_code, 403)
            self.assertEqual((await self.post(event("websocket.connect"), signature="sha256=00")).status_code, 403)
            stale = event("websocket.connect", time=int(time.time()) - 61)
            self.assertEqual((await self.post(stale)).status_code, 403)
            self.assertEqual((await self.post(event("websocket.connect", time=None))).status_code, 403)
        self.assertEqual((await self.post(event("websocket.connect", time=int(time.time()) + 30))).status_code, 200)

    async def test_requests_that_are_not_events(self):
        self.assertEqual((await AsyncClient().get("/estuary/events/")).status_code, 405)
        self.assertEqual((await self.post(b"not json")).status_code, 400)
        self.assertEqual((await self.post(b"[1]")).status_code, 400)
        no_channel = event("websocket.connect")
        del no_channel["channel"]
        self.assertEqual((await self.post(no_channel)).status_code, 400)

    @override_settings(ESTUARY_EVENTS_SECRET=None)
    async def test_the_events_secret_defaults_to_the_callbacks(self):
        self.assertEqual((await self.post(event("websocket.connect"), secret=CALLBACK_SECRET)).status_code, 200)


class ConnectView(TestCase):
    def payload(self, **extra):
        body = {
            "event": "connect",
            "path": "/ws/notifications/",
            "query": "",
            "headers": {"origin": "https://example.org"},
            "cookies": {},
            "client": {"host": "203.0.113.5", "port": 51234},
            "time": int(time.time()),
        }
        body.update(extra)
        return json.dumps(body).encode()

    def post(self, client, url="/estuary/connect/", body=None, secret=CALLBACK_SECRET):
        body = body if body is not None else self.payload()
        return client.post(url, data=body, content_type="application/json", headers={"X-Estuary-Signature": sign(body, secret)})

    def test_a_logged_in_user_is_let_in_with_its_group(self):
        alice = User.objects.create_user("alice", password="pw", is_staff=True)
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        response = self.post(client)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(),
            {
                "user": {"id": alice.pk, "name": "alice", "attributes": {"is_staff": True, "is_superuser": False}},
                "groups": [f"user.{alice.pk}"],
            },
        )

    def test_an_anonymous_visitor_is_let_in_anonymously(self):
        response = self.post(Client(enforce_csrf_checks=True))
        self.assertEqual((response.status_code, response.json()), (200, {}))

    def test_hooks_refuse_anonymous_and_add_groups_and_data(self):
        response = self.post(Client(), url="/estuary/members/")
        self.assertEqual(response.json(), {"reject": {"close_code": 4403, "reason": "log in first"}})
        bob = User.objects.create_user("bob", password="pw", is_staff=True)
        client = Client()
        client.force_login(bob)
        answer = self.post(client, url="/estuary/members/").json()
        self.assertEqual((answer["groups"], answer["data"]), ([f"user.{bob.pk}", "staff"], {"plan": "pro"}))

    def test_bad_signatures_and_stale_times_are_refused(self):
        client = Client()
        with self.assertLogs("django_estuary", "WARNING"):
            self.assertEqual(self.post(client, secret="not the callback secret at all").status_code, 403)
            self.assertEqual(self.post(client, body=self.payload(time=int(time.time()) - 120)).status_code, 403)
            self.assertEqual(self.post(client, body=self.payload(time="now")).status_code, 403)
        self.assertEqual(client.get("/estuary/connect/").status_code, 405)
