"""The chat consumer of the official Channels tutorial, plus a username."""
import json

from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"

        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code):
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        # The tutorial lets bad input raise, which kills the connection; the
        # benchmark contract requires the connection to survive it.
        try:
            text_data_json = json.loads(text_data)
        except (TypeError, ValueError):
            await self.send_error("Invalid JSON format")
            return
        try:
            message = text_data_json["message"]
            username = text_data_json.get("username") or "Anonymous"
        except (TypeError, KeyError, AttributeError):
            await self.send_error("Invalid message")
            return

        await self.channel_layer.group_send(
            self.room_group_name,
            {"type": "chat.message", "message": message, "username": username},
        )

    async def chat_message(self, event):
        await self.send(
            text_data=json.dumps(
                {"message": event["message"], "username": event["username"]}
            )
        )

    async def send_error(self, text):
        await self.send(text_data=json.dumps({"type": "error", "message": text}))
