"""Django views Estuary calls: the HTTP transport of the relay protocol, and
the connect callback.

``urls.py``::

    from django_estuary.views import connect_view, events_view
    from chat.consumers import ChatConsumer

    urlpatterns = [
        path("estuary/connect/", connect_view),              # [auth.callback] url
        path("estuary/events/", events_view(ChatConsumer)),  # a route's http = "..."
    ]

Both check Estuary's signature and the request's ``time``
(:mod:`django_estuary.signing`) and answer 403 to anything else; both are
exempt from CSRF (Estuary is no browser; the signature is the check).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any, Iterable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseForbidden, HttpResponseNotAllowed, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from . import events
from .settings import callback_secret, events_secret
from .signing import MAX_SKEW, SIGNATURE_HEADER, is_fresh, verify

__all__ = ["ConnectView", "Reject", "connect_view", "events_view"]

logger = logging.getLogger("django_estuary")


def _signed_json(request: HttpRequest, secret: str, max_skew: float) -> dict | HttpResponse:
    """The request's JSON body when Estuary signed it just now, else the
    response refusing it."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    body = request.body
    if not verify(body, request.headers.get(SIGNATURE_HEADER), secret):
        logger.warning("refused a request to %s: not signed with the shared secret", request.path)
        return HttpResponseForbidden("bad signature")
    try:
        payload = json.loads(body)
    except ValueError:
        return HttpResponseBadRequest("the body is not JSON")
    if not isinstance(payload, dict):
        return HttpResponseBadRequest("the body is not a JSON object")
    if not is_fresh(payload.get("time"), max_skew=max_skew):
        logger.warning("refused a request to %s: its time is more than %s s off (a replay, or a clock out of sync)", request.path, max_skew)
        return HttpResponseForbidden("stale time")
    return payload


#: How a byte string is written inside an ``estuary.event``'s ``event`` over
#: HTTP: ``{"$bytes": "<base64>"}`` (docs/WORKERS.md).
BYTES_TAG = "$bytes"


def _untag_bytes(value: Any) -> Any:
    """``value`` with every ``{"$bytes": "<base64>"}`` in it, at any depth,
    back to the bytes it stands for (one that is not base64 is left as it
    is).

    >>> _untag_bytes({"type": "file.chunk", "data": {"$bytes": "AP8="}, "parts": [{"$bytes": "AQ=="}, "text"]})
    {'type': 'file.chunk', 'data': b'\\x00\\xff', 'parts': [b'\\x01', 'text']}
    """
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(BYTES_TAG), str):
            try:
                return base64.b64decode(value[BYTES_TAG].encode("ascii"), validate=True)
            except ValueError:
                return value
        return {key: _untag_bytes(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_untag_bytes(item) for item in value]
    return value


def _for_json(message: dict) -> dict:
    """A message as JSON carries it: ``bytes`` in base64."""
    if isinstance(message.get("bytes"), (bytes, bytearray)):
        message = dict(message, bytes=base64.b64encode(message["bytes"]).decode("ascii"))
    return message


def events_view(consumer_class: type, *, secret: str | None = None, max_skew: float = MAX_SKEW, **initkwargs: Any):
    """The view for a route with ``http = "https://.../estuary/events/"``: each
    event of its connections, POSTed and signed by Estuary, runs through a
    new ``consumer_class`` and is answered with what the handler sent and the
    connection's state::

        {"messages": [{"type": "websocket.accept"}, ...], "state": {...}}

    ``secret`` defaults to :func:`~django_estuary.settings.events_secret`.
    What a handler sends is collected and answered at its end, so over HTTP
    a streamed reply reaches the client in one piece (use a worker to
    stream); ``group_send`` and sends to other connections go through the
    channel layer as always. A handler that raises is logged and answered
    with ``websocket.close`` 1011.

    >>> from django_estuary.consumer import EstuaryConsumer
    >>> view = events_view(EstuaryConsumer)
    >>> view.csrf_exempt
    True
    """
    getattr(consumer_class, "_check_initkwargs", lambda _: None)(initkwargs)

    async def view(request: HttpRequest) -> HttpResponse:
        payload = _signed_json(request, secret or events_secret(), max_skew)
        if isinstance(payload, HttpResponse):
            return payload
        if events.connection_of(payload) is None:
            return HttpResponseBadRequest("the event has no connection channel and seq")
        # JSON has no bytes: a frame's are base64, and those of a forwarded
        # message are tagged ({"$bytes": ...}); both become bytes again, as
        # a worker reading msgpack gets them.
        if payload.get("type") == events.RECEIVE and isinstance(payload.get("bytes"), str):
            try:
                payload["bytes"] = base64.b64decode(payload["bytes"].encode("ascii"), validate=True)
            except ValueError:
                pass  # left a string: handle_event refuses it (close 1011)
        if payload.get("type") == events.ESTUARY_EVENT and isinstance(payload.get("event"), dict):
            payload["event"] = _untag_bytes(payload["event"])
        messages: list[dict] = []

        async def send(message: dict) -> None:
            messages.append(_for_json(message))

        state = await events.handle_event(consumer_class, initkwargs, payload, send, close_old_connections=False)
        return JsonResponse({"messages": messages, "state": state})

    view.__name__ = view.__qualname__ = f"{consumer_class.__name__}_events_view"
    return csrf_exempt(view)


class Reject(Exception):
    """Raised in a :class:`ConnectView` hook to refuse the handshake: with an
    HTTP ``status`` (400-499) before the upgrade, or with a ``close_code``
    (4000-4999 or 1008) right after it, which a browser's ``CloseEvent``
    shows.

    >>> Reject(close_code=4403, reason="log in first").answer()
    {'reject': {'close_code': 4403, 'reason': 'log in first'}}
    """

    def __init__(self, *, status: int | None = None, close_code: int | None = None, reason: str = ""):
        if (status is None) == (close_code is None):
            raise ValueError("give exactly one of status and close_code")
        if status is not None and not 400 <= status <= 499:
            raise ValueError("status must be 400-499")
        if close_code is not None and not (4000 <= close_code <= 4999 or close_code == 1008):
            raise ValueError("close_code must be 4000-4999 or 1008")
        super().__init__(reason)
        self.status, self.close_code, self.reason = status, close_code, reason

    def answer(self) -> dict:
        """The callback's answer for this refusal."""
        reject: dict[str, Any] = {"status": self.status} if self.status is not None else {"close_code": self.close_code}
        if self.reason:
            reject["reason"] = self.reason
        return {"reject": reject}


@method_decorator(csrf_exempt, name="dispatch")
class ConnectView(View):
    """Answers Estuary's connect callback (``[auth.callback]``) from Django's
    own session: ``request.user`` is the visitor (Estuary forwards its
    session cookie).

    By default a logged-in user is let in with its primary key, username,
    ``is_staff`` and ``is_superuser`` attributes and the group
    ``user.<pk>``; an anonymous visitor is let in anonymously (a route with
    ``auth = "required"`` then refuses it with 401). Subclass and override
    :meth:`get_groups`, :meth:`get_attributes`, :meth:`get_data` or
    :meth:`anonymous`, and raise :class:`Reject` in any of them to refuse::

        class StaffOnly(ConnectView):
            def anonymous(self, request, payload):
                raise Reject(close_code=4403, reason="log in first")

            def get_groups(self, request, user):
                return [f"user.{user.pk}"] + (["staff"] if user.is_staff else [])

    ``payload`` is the callback's body (``path``, ``query``, ``event``:
    ``"connect"`` or ``"recheck"``, ...). Answering must only read: the
    question may be asked twice for one handshake.
    """

    http_method_names = ["post"]
    #: The shared secret; ``None`` reads :func:`~django_estuary.settings.callback_secret`.
    secret: str | None = None
    max_skew: float = MAX_SKEW

    def post(self, request: HttpRequest) -> HttpResponse:
        payload = _signed_json(request, self.secret or callback_secret(), self.max_skew)
        if isinstance(payload, HttpResponse):
            return payload
        try:
            answer = self.answer(request, payload)
        except Reject as refusal:
            answer = refusal.answer()
        return JsonResponse(answer)

    def answer(self, request: HttpRequest, payload: dict) -> dict:
        """The whole answer (see the estuary-callback crate's documentation)."""
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return self.anonymous(request, payload)
        answer: dict[str, Any] = {
            "user": {"id": user.pk, "name": user.get_username(), "attributes": self.get_attributes(request, user)}
        }
        groups = list(self.get_groups(request, user))
        if groups:
            answer["groups"] = groups
        data = self.get_data(request, user)
        if data:
            answer["data"] = data
        return answer

    def anonymous(self, request: HttpRequest, payload: dict) -> dict:
        """The answer for a visitor who is not logged in: ``{}`` lets it in
        anonymously; raise :class:`Reject` to refuse it."""
        return {}

    def get_attributes(self, request: HttpRequest, user: Any) -> dict:
        """The user's attributes, read on the socket as ``scope["user"].<name>``."""
        return {"is_staff": bool(getattr(user, "is_staff", False)), "is_superuser": bool(getattr(user, "is_superuser", False))}

    def get_groups(self, request: HttpRequest, user: Any) -> Iterable[str]:
        """The groups Estuary joins before the consumer's ``connect``."""
        return [f"user.{user.pk}"]

    def get_data(self, request: HttpRequest, user: Any) -> dict | None:
        """``data`` for the scope (``Scope::data`` in Rust consumers), or ``None``."""
        return None


#: :class:`ConnectView` as a view: ``path("estuary/connect/", connect_view)``.
connect_view = ConnectView.as_view()
