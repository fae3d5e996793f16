"""Django Channels-style consumers whose sockets Estuary holds.

Estuary accepts the WebSocket connections and relays each connection's
events to your Django code (docs/WORKERS.md); this package runs them through
consumers written like Channels' ``AsyncWebsocketConsumer``:

- :class:`~django_estuary.consumer.EstuaryConsumer` and
  :class:`~django_estuary.consumer.AsyncJsonEstuaryConsumer`, with
  ``as_worker()`` for ``runworker``;
- :func:`~django_estuary.views.events_view` (the HTTP transport) and
  :data:`~django_estuary.views.connect_view` (the connect callback);
- :func:`~django_estuary.settings.channel_layers`;
- :mod:`django_estuary.testing`, Estuary's side played over a channel layer.

The submodules import Django and Channels: import them from code that runs
with Django's settings configured.
"""

__version__ = "0.1.0"

from .consumer import AsyncJsonEstuaryConsumer, EstuaryConsumer  # noqa: E402

__all__ = ["AsyncJsonEstuaryConsumer", "EstuaryConsumer", "__version__"]
