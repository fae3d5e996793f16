import time
import uuid

from channels.layers import get_channel_layer
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from project.push import json_body, refused

MAX_TITLE = 200
MAX_BODY = 2000


@csrf_exempt
@require_POST
async def notify(request, user_id):
    """``POST /notify/<user_id>/`` with ``{"title": "...", "body": "..."}`` and
    the push token: every open socket of that user gets it (unless muted)."""
    if (refusal := refused(request)) is not None:
        return refusal
    body = json_body(request)
    title = body.get("title") if body else None
    text = body.get("body", "") if body else ""
    if not isinstance(title, str) or not 1 <= len(title) <= MAX_TITLE or not isinstance(text, str) or len(text) > MAX_BODY:
        return JsonResponse({"error": f"send {{\"title\": 1-{MAX_TITLE} characters, \"body\": up to {MAX_BODY}}}"}, status=400)
    event = {"type": "notification.created", "title": title, "body": text, "id": uuid.uuid4().hex, "ts": int(time.time() * 1000)}
    await get_channel_layer().group_send(f"user.{user_id}", event)
    return JsonResponse({"sent": True, "id": event["id"]}, status=202)
