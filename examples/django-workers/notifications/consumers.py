"""Per-user notifications: each signed-in user's sockets are in the group
``user.<id>`` (the route's ``groups`` in estuary.toml: Estuary joins it before
``connect``), and ``POST /notify/<id>/`` sends a ``notification.created``
event there. That type is not a frame Estuary renders, so each of the user's
connections gets it as an event and this consumer decides, per connection,
what to send: nothing while the client has muted it."""

import json

from django_estuary.consumer import EstuaryConsumer


class NotificationConsumer(EstuaryConsumer):
    async def connect(self):
        user = self.scope["user"]
        if not user.is_authenticated:
            # The route says auth = "required", so Estuary refuses anonymous
            # handshakes with 401 before asking; this is the worker's own check.
            await self.close()
            return
        self.state.update(muted=False, missed=0)
        await self.accept()
        await self.send_json({"type": "ready", "user": user.get_username(), "user_id": user.pk})

    async def receive(self, text_data=None, bytes_data=None):
        try:
            request = json.loads(text_data) if text_data is not None else None
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return await self.send_json({"type": "error", "message": "send a JSON object"})
        if request.get("type") == "mute" and isinstance(request.get("muted"), bool):
            self.state["muted"] = request["muted"]
            reply = {"type": "muted", "muted": self.state["muted"], "missed": self.state["missed"]}
            if not self.state["muted"]:
                self.state["missed"] = 0
            return await self.send_json(reply)
        await self.send_json({"type": "error", "message": 'unknown request: send {"type": "mute", "muted": true|false}'})

    async def notification_created(self, event):
        """From ``POST /notify/<id>/``, once per connection of the user."""
        if self.state.get("muted"):
            self.state["missed"] = self.state.get("missed", 0) + 1
            return
        await self.send_json({"type": "notification", "title": event["title"], "body": event.get("body", ""), "id": event["id"], "ts": event["ts"]})

    async def send_json(self, content):
        await self.send(text_data=json.dumps(content))
