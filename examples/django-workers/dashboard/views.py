import json
import math
import time

from channels.layers import get_channel_layer
from django.core.cache import cache
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from project.push import json_body, refused

from .consumers import METRIC, metric_group, value_key


@csrf_exempt
@require_POST
async def push_metric(request, metric):
    """``POST /dashboard/metrics/<metric>/`` with ``{"value": 42}`` and the push
    token: stores the value and sends it to every subscriber in one
    ``websocket.send`` group message (rendered once by Estuary)."""
    if (refusal := refused(request)) is not None:
        return refusal
    if not METRIC.fullmatch(metric):
        return JsonResponse({"error": "metric must be 1-50 of a-z 0-9 _ . -"}, status=400)
    body = json_body(request)
    value = body.get("value") if body else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return JsonResponse({"error": 'send {"value": <a number>}'}, status=400)
    last = {"value": value, "ts": int(time.time() * 1000)}
    await cache.aset(value_key(metric), last, timeout=None)
    update = {"type": "update", "metric": metric, **last}
    await get_channel_layer().group_send(metric_group(metric), {"type": "websocket.send", "text": json.dumps(update)})
    return JsonResponse({"sent": True, **update}, status=202)
