import json
import time

from django.contrib.auth import get_user_model
from django.test import Client, TestCase

from django_estuary.signing import sign

SECRET = "the callback secret of the example's tests"


class ConnectCallback(TestCase):
    def ask(self, client):
        body = json.dumps({"event": "connect", "path": "/ws/notifications/", "query": "", "time": int(time.time())}).encode()
        return client.post("/estuary/connect/", data=body, content_type="application/json", headers={"X-Estuary-Signature": sign(body, SECRET)})

    def test_a_logged_in_user_without_groups_the_routes_name_them(self):
        alice = get_user_model().objects.create_user("alice", password="pw")
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        self.assertEqual(
            self.ask(client).json(),
            {"user": {"id": alice.pk, "name": "alice", "attributes": {"is_staff": False, "is_superuser": False}}},
        )

    def test_a_visitor_is_anonymous(self):
        self.assertEqual(self.ask(Client()).json(), {})

    def test_the_home_page(self):
        response = Client().get("/")
        self.assertContains(response, "/ws/chat/lobby/")
