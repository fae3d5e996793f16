"""WebSocket routes, as in the Channels tutorial's chat/routing.py."""
from django.urls import re_path

from . import consumers

# The tutorial's pattern is \w+ with a mandatory slash; the chat protocol also
# allows '-' and no trailing slash, and caps rooms at 94 chars so the group
# name stays under Channels' 100-char limit.
websocket_urlpatterns = [
    re_path(
        r"^ws/chat/(?P<room_name>[A-Za-z0-9_-]{1,94})/?$",
        consumers.ChatConsumer.as_asgi(),
    ),
]
