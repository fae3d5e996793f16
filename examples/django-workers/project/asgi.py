"""The ASGI application. `python manage.py runworker chat notifications assistant
dashboard` serves its "channel" part: each worker channel (a route's `channel`
in estuary.toml) to its consumer. The WebSocket part is Estuary's."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_application = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter  # noqa: E402

from assistant.consumers import AssistantConsumer  # noqa: E402
from chat.consumers import ChatConsumer  # noqa: E402
from dashboard.consumers import DashboardConsumer  # noqa: E402
from notifications.consumers import NotificationConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "channel": ChannelNameRouter(
            {
                "chat": ChatConsumer.as_worker(),
                "notifications": NotificationConsumer.as_worker(),
                "assistant": AssistantConsumer.as_worker(),
                "dashboard": DashboardConsumer.as_worker(),
            }
        ),
    }
)
