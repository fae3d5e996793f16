"""A metrics dashboard: typed requests, typed replies.

``{"type": "subscribe", "metric": "sales"}`` joins the metric's group
(``metric.sales``) and answers ``subscribed`` with its last value;
``unsubscribe`` leaves it; ``get`` answers its last value. Anything else is
answered with an ``error`` naming the request type, never silence.
``POST /dashboard/metrics/<name>/`` stores a value and pushes it to the
group as a ``websocket.send``, which Estuary writes to every subscriber
without calling Python. The subscriptions live in ``self.state``, so
``disconnect`` can leave every group the connection joined."""

import json
import re

from django.core.cache import cache

from django_estuary.consumer import EstuaryConsumer

METRIC = re.compile(r"[a-z0-9_.-]{1,50}")
MAX_SUBSCRIPTIONS = 20


def metric_group(metric: str) -> str:
    return f"metric.{metric}"


def value_key(metric: str) -> str:
    return f"dashboard:metric:{metric}"


async def last_value(metric: str):
    """The metric's last pushed ``{"value", "ts"}``, or None."""
    return await cache.aget(value_key(metric))


class DashboardConsumer(EstuaryConsumer):
    async def connect(self):
        self.state["subscriptions"] = []
        await self.accept()
        await self.send_json({"type": "ready", "requests": ["subscribe", "unsubscribe", "get"]})

    async def receive(self, text_data=None, bytes_data=None):
        try:
            request = json.loads(text_data) if text_data is not None else None
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return await self.error("send a JSON object with a type", None)
        kind = request.get("type")
        handler = {"subscribe": self.subscribe, "unsubscribe": self.unsubscribe, "get": self.get}.get(kind)
        if handler is None:
            return await self.error("unknown request type", kind)
        metric = request.get("metric")
        if not isinstance(metric, str) or not METRIC.fullmatch(metric):
            return await self.error("metric must be 1-50 of a-z 0-9 _ . -", kind)
        await handler(metric)

    async def subscribe(self, metric):
        subscriptions = self.state["subscriptions"]
        if metric not in subscriptions:
            if len(subscriptions) >= MAX_SUBSCRIPTIONS:
                return await self.error(f"at most {MAX_SUBSCRIPTIONS} subscriptions", "subscribe")
            await self.channel_layer.group_add(metric_group(metric), self.channel_name)
            subscriptions.append(metric)
        await self.send_json({"type": "subscribed", "metric": metric, "last": await last_value(metric)})

    async def unsubscribe(self, metric):
        if metric not in self.state["subscriptions"]:
            return await self.error(f"not subscribed to {metric}", "unsubscribe")
        await self.channel_layer.group_discard(metric_group(metric), self.channel_name)
        self.state["subscriptions"].remove(metric)
        await self.send_json({"type": "unsubscribed", "metric": metric})

    async def get(self, metric):
        await self.send_json({"type": "value", "metric": metric, "last": await last_value(metric)})

    async def disconnect(self, code):
        for metric in self.state.get("subscriptions", []):
            await self.channel_layer.group_discard(metric_group(metric), self.channel_name)

    async def error(self, message, request_type):
        await self.send_json({"type": "error", "message": message, "request_type": request_type})

    async def send_json(self, content):
        await self.send(text_data=json.dumps(content))
