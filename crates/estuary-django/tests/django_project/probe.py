# Drives the Django project for the tests: `prepare` migrates, creates users and logs
# them in through Django's own LoginView; `mutate` then changes the world behind the
# sessions. Each prints one JSON object on stdout.
import json
import os
import sys
import time
from datetime import timedelta
from unittest import mock

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
import django

django.setup()

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone
from importlib import import_module

SIGNED = settings.SESSION_ENGINE.endswith("signed_cookies")
SessionStore = import_module(settings.SESSION_ENGINE).SessionStore


def login(username, password):
    client = Client()
    response = client.post("/login/", {"username": username, "password": password})
    assert response.status_code == 302, (username, response.status_code)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def prepare():
    call_command("migrate", verbosity=0)
    alice = User.objects.create_user(
        "alice", "alice@example.org", "alice-pw", first_name="Alice", last_name="Liddell", is_staff=True
    )
    for name in ["carol", "dave", "erin", "frank"]:
        User.objects.create_user(name, f"{name}@example.org", f"{name}-pw")
    out = {"alice_id": str(alice.pk)}
    for name in ["alice", "carol", "dave", "frank"]:
        out[name] = login(name, f"{name}-pw")
    # Logged in while the project still had its previous key (now a fallback).
    with override_settings(SECRET_KEY=os.environ["ESTUARY_DJANGO_OLD_SECRET"], SECRET_KEY_FALLBACKS=[]):
        out["erin"] = login("erin", "erin-pw")
    # A session made by someone who does not know the key.
    with override_settings(SECRET_KEY="an attacker's guess", SECRET_KEY_FALLBACKS=[]):
        out["forged"] = login("alice", "alice-pw")
    # A visitor with a session but no login.
    store = SessionStore()
    store["cart"] = [1, 2]
    store.save()
    out["visitor"] = store.session_key
    if SIGNED:
        # A cookie signed two hours ago: older than SESSION_COOKIE_AGE (one hour).
        with mock.patch("time.time", return_value=time.time() - 7200):
            out["old"] = login("alice", "alice-pw")
    print(json.dumps(out))


def mutate():
    frank = User.objects.get(username="frank")
    frank.set_password("frank-new-pw")
    frank.save()
    User.objects.filter(username="dave").update(is_active=False)
    if not SIGNED:
        from django.contrib.sessions.models import Session

        carol = json.loads(sys.argv[2])["carol"]
        Session.objects.filter(session_key=carol).update(expire_date=timezone.now() - timedelta(seconds=1))
    print(json.dumps({"ok": True}))


def verdicts():
    """Who each cookie of the JSON object in argv[2] (name -> session cookie)
    is, as Django's own `django.contrib.auth.get_user` sees it (a request
    through SessionMiddleware, as a page view) and as Channels'
    `AuthMiddlewareStack` puts it in scope["user"] (called as an ASGI server
    calls it, with a WebSocket scope): {"django": {name: username or null},
    "channels": {...}}. Both may flush or rotate a session they judge; those
    writes are suppressed here, so that each verdict sees the sessions as
    they are and the order of the checks does not matter."""
    import asyncio

    from channels.auth import AuthMiddlewareStack
    from django.contrib.auth import get_user
    from django.contrib.sessions.backends.base import SessionBase
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.http import HttpResponse
    from django.test import RequestFactory

    SessionBase.flush = lambda self: None
    SessionBase.cycle_key = lambda self: None
    cookies = json.loads(sys.argv[2])
    name_of = lambda user: user.get_username() if user.is_authenticated else None

    django_users = {}
    for name, cookie in cookies.items():
        request = RequestFactory().get("/", HTTP_COOKIE=f"{settings.SESSION_COOKIE_NAME}={cookie}")
        SessionMiddleware(lambda r: HttpResponse()).process_request(request)
        django_users[name] = name_of(get_user(request))

    seen = {}

    async def app(scope, receive, send):
        seen["user"] = name_of(scope["user"])
        await send({"type": "websocket.close"})

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        pass

    async def channels_user(cookie):
        seen.clear()
        scope = {
            "type": "websocket",
            "path": "/ws/",
            "query_string": b"",
            "headers": [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())],
        }
        await AuthMiddlewareStack(app)(scope, receive, send)
        return seen["user"]

    async def channels_users():
        return {name: await channels_user(cookie) for name, cookie in cookies.items()}

    print(json.dumps({"django": django_users, "channels": asyncio.run(channels_users())}))


def group_send():
    """What a Django view does to push to a group: channels' group_send, here
    through channels_redis (settings.CHANNEL_LAYERS), of the JSON message in
    argv[3] to the group argv[2]."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    async_to_sync(get_channel_layer().group_send)(sys.argv[2], json.loads(sys.argv[3]))
    print(json.dumps({"ok": True}))


{"prepare": prepare, "mutate": mutate, "verdicts": verdicts, "group_send": group_send}[sys.argv[1]]()
