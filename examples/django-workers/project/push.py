"""What the push views share: a bearer token, and a JSON body."""

import hmac
import json

from django.conf import settings
from django.http import JsonResponse


def refused(request):
    """The response refusing a request without the push token, or None."""
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {settings.EXAMPLE_PUSH_TOKEN}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return JsonResponse({"error": "send Authorization: Bearer <EXAMPLE_PUSH_TOKEN>"}, status=401)
    return None


def json_body(request):
    """The request's JSON object, or None."""
    try:
        body = json.loads(request.body)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
