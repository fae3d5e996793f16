"""The tutorial's chat room, ported to Estuary, speaking docs/CHAT.md's protocol.

Estuary holds the socket and relays its events here; every frame for the
room is a ``websocket.send`` group message, which Estuary renders once and
writes to every member (Python is not called per member). ``chat.message``,
``user.join`` and ``user.leave`` events that other Django code sends into a
room (docs/DJANGO.md) are rendered per member by the handlers below.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from urllib.parse import parse_qs

from django_estuary.consumer import EstuaryConsumer

from . import names

logger = logging.getLogger(__name__)

ROOM = re.compile(r"[A-Za-z0-9_-]{1,94}")
MAX_MESSAGE_CHARS = 1000
ANONYMOUS = "Anonymous"

INVALID_JSON = "Invalid JSON format"
INVALID_MESSAGE = "Invalid message"
BINARY = "Binary messages are not supported"
SPOOFED = "username does not match the signed-in user"
INVALID_USERNAME = "Invalid username: control, bidirectional or invisible characters are not allowed"
TOO_LONG_USERNAME = "Invalid username: over 50 characters"
USERNAME_TAKEN = "This name belongs to a signed-in member of the room; choose another"
UNDELIVERED = "Message not delivered: the server cannot reach its channel layer; try again"
CLOSE_INVALID_USERNAME = 4400
CLOSE_USERNAME_TAKEN = 4409


def room_group(room: str) -> str:
    return f"chat_{room}"


def now_millis() -> int:
    return int(time.time() * 1000)


def chat_frame(message: str, username: str, *, id: str | None = None, ts: int | None = None, verified: bool = False) -> str:
    """A ``chat_message`` frame; a missing ``id`` or ``ts`` is made now."""
    frame = {"type": "chat_message", "message": message, "username": username, "id": id or uuid.uuid4().hex, "ts": ts or now_millis()}
    if verified:
        frame["verified"] = True
    return json.dumps(frame)


def who(username: str, users: list[dict]) -> str:
    """Whom an announcement names: ``alice``, ``alice and bob``, ``alice, bob
    and carol``, ``alice, bob and 98 others``."""
    if len(users) < 2:
        return username
    a, b = users[0]["username"], users[1]["username"]
    if len(users) == 2:
        return f"{a} and {b}"
    if len(users) == 3:
        return f"{a}, {b} and {users[2]['username']}"
    return f"{a}, {b} and {len(users) - 2} others"


def presence_frame(kind: str, username: str, *, verified: bool = False, users: list[dict] | None = None) -> str:
    """A ``user_join`` or ``user_leave`` frame."""
    verb = "joined" if kind == "user_join" else "left"
    frame = {"type": kind, "username": username, "message": f"{who(username, users or [])} {verb} the room"}
    if verified:
        frame["verified"] = True
    if users and len(users) > 1:
        frame["users"] = users
    return json.dumps(frame)


class ChatConsumer(EstuaryConsumer):
    """One member of a room. ``self.state`` keeps the room, the member's name
    (when known) and whether it is signed in, from connect to disconnect."""

    async def connect(self):
        room = self.scope["url_route"]["kwargs"].get("room_name", "")
        if not isinstance(room, str) or not ROOM.fullmatch(room):
            await self.close(reason="invalid room name")  # before accept: HTTP 403
            return
        user = self.scope["user"]
        claimed = self.query_username()
        if user.is_authenticated:
            given = claimed.strip() if claimed is not None else ""
            if given and len(given) <= names.MAX_USERNAME_CHARS and given != user.get_username():
                await self.close(reason=SPOOFED)  # HTTP 403
                return
            name, verified = user.get_username(), True
        else:
            verified = False
            try:
                name = names.check(claimed) if claimed is not None else None
            except names.NameProblem as problem:
                return await self.refuse(CLOSE_INVALID_USERNAME, TOO_LONG_USERNAME if problem.too_long else INVALID_USERNAME)
            if name is not None and await names.taken(room, name):
                return await self.refuse(CLOSE_USERNAME_TAKEN, USERNAME_TAKEN)
        await self.channel_layer.group_add(room_group(room), self.channel_name)
        if verified:
            await names.sign_in(room, name)
        # What the later events need; disconnect undoes the join from it.
        self.state.update(room=room, name=name, verified=verified)
        await self.accept()
        await self.send_json({"type": "connection_established", "message": "Connected to chat room"})
        if name is not None:
            await self.to_room(presence_frame("user_join", name, verified=verified))

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            return await self.error(BINARY)
        try:
            fields = json.loads(text_data)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            return await self.error(INVALID_JSON)
        message = fields.get("message")
        if not isinstance(message, str) or not 1 <= len(message.strip()) <= MAX_MESSAGE_CHARS:
            return await self.error(INVALID_MESSAGE)
        message = message.strip()
        room, verified = self.state["room"], self.state["verified"]
        raw_name = fields.get("username")
        if verified:
            # A signed-in member writes under its own name; another is refused.
            username = self.state["name"]
            if isinstance(raw_name, str) and raw_name.strip() and raw_name.strip() != username:
                return await self.error(SPOOFED)
        elif raw_name is None:
            username = ANONYMOUS
        elif not isinstance(raw_name, str):
            return await self.error(INVALID_MESSAGE)
        else:
            try:
                username = names.check(raw_name) or ANONYMOUS
            except names.NameProblem as problem:
                return await self.error(INVALID_MESSAGE if problem.too_long else INVALID_USERNAME)
            if username != ANONYMOUS and await names.taken(room, username):
                return await self.error(USERNAME_TAKEN)
        try:
            await self.to_room(chat_frame(message, username, verified=verified))
        except Exception:
            # The channel layer is unreachable (Redis down) or full: tell the
            # sender and keep the connection.
            logger.warning("chat message not delivered to room %s", room, exc_info=True)
            await self.error(UNDELIVERED)

    async def disconnect(self, code):
        room = self.state.get("room")
        if room is None:
            return  # refused at connect: never joined
        name, verified = self.state.get("name"), self.state.get("verified", False)
        await self.channel_layer.group_discard(room_group(room), self.channel_name)
        if verified:
            await names.sign_out(room, name)
        if name is not None:
            await self.to_room(presence_frame("user_leave", name, verified=verified))

    # Events other Django code sends into the room (docs/DJANGO.md): each
    # member renders its own frame.

    async def chat_message(self, event):
        username = event.get("username") or ANONYMOUS
        await self.send(
            text_data=chat_frame(str(event.get("message", "")), str(username), id=event.get("id"), ts=event.get("ts"), verified=event.get("verified") is True)
        )

    async def user_join(self, event):
        await self.send(text_data=self.presence_event("user_join", event))

    async def user_leave(self, event):
        await self.send(text_data=self.presence_event("user_leave", event))

    @staticmethod
    def presence_event(kind, event):
        users = event.get("users") if isinstance(event.get("users"), list) else None
        return presence_frame(kind, str(event.get("username") or ANONYMOUS), verified=event.get("verified") is True, users=users)

    # Helpers.

    def query_username(self) -> str | None:
        """``?username=`` of the URL (the first one), or None."""
        values = parse_qs(self.scope["query_string"].decode("utf-8", "replace"), keep_blank_values=True).get("username")
        return values[0] if values else None

    async def to_room(self, text: str) -> None:
        """One frame for every member, rendered once by Estuary."""
        await self.channel_layer.group_send(room_group(self.state["room"]), {"type": "websocket.send", "text": text})

    async def send_json(self, content) -> None:
        await self.send(text_data=json.dumps(content))

    async def error(self, message: str) -> None:
        await self.send_json({"type": "error", "message": message})

    async def refuse(self, code: int, reason: str) -> None:
        """Accepts, says why, and closes: a browser sees the reason, where a
        refused handshake tells it nothing."""
        await self.accept()
        await self.error(reason)
        await self.close(code, reason)
