# The connect callback view that docs/SECURITY.md and the estuary-callback crate
# document, as a project would write it: Estuary POSTs each WebSocket handshake here
# and this answers who is connecting, from Django's own session.
import hashlib, hmac, json, time
from django.conf import settings
from django.http import HttpResponseForbidden, JsonResponse
from django.views.decorators.csrf import csrf_exempt

@csrf_exempt
def estuary_connect(request):
    expected = "sha256=" + hmac.new(settings.ESTUARY_CALLBACK_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    signed = hmac.compare_digest(request.headers.get("X-Estuary-Signature", ""), expected)
    if request.method != "POST" or not signed or abs(time.time() - json.loads(request.body)["time"]) > 60:
        return HttpResponseForbidden()  # not Estuary's, or a replay
    user = request.user  # the visitor, from the forwarded session cookie
    if not user.is_authenticated:
        return JsonResponse({"reject": {"close_code": 4403, "reason": "log in first"}})
    return JsonResponse({"user": {"id": user.pk, "name": user.get_username(), "attributes": {"is_staff": user.is_staff}},
                         "groups": [f"user.{user.pk}"]})
