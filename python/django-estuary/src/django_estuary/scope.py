"""The scope a consumer reads as ``self.scope``, made from the one Estuary sends.

Estuary sends the connection's scope with every event (see docs/WORKERS.md).
:func:`build_scope` turns it into the shape a Channels consumer expects:
``query_string`` and header pairs as bytes, ``url_route`` always present, and
``user`` an object (:class:`EstuaryUser`, or :class:`AnonymousEstuaryUser`
for an anonymous visitor) rather than a map.

>>> scope = build_scope({"path": "/ws/chat/lobby/", "query_string": "username=bob",
...                      "url_route": {"args": [], "kwargs": {"room_name": "lobby"}},
...                      "user": {"id": "42", "name": "alice", "attributes": {"is_staff": True}}})
>>> scope["query_string"], scope["url_route"]["kwargs"]["room_name"]
(b'username=bob', 'lobby')
>>> user = scope["user"]
>>> user.is_authenticated, user.pk, user.get_username(), user.is_staff
(True, 42, 'alice', True)
>>> build_scope({})["user"].is_authenticated
False
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["AnonymousEstuaryUser", "EstuaryUser", "ProtocolError", "build_scope", "build_user"]


class ProtocolError(ValueError):
    """An event or a scope that is not in the shape docs/WORKERS.md gives."""


def _user_id(raw: Any) -> int | str:
    """Django's default primary keys are integers: an id written as a canonical
    decimal integer (``"42"``, not ``"042"``) becomes that integer."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise ProtocolError("the user's id must be a string or an integer")
    if isinstance(raw, int):
        return raw
    if raw.isascii() and raw.isdigit() and str(int(raw)) == raw:
        return int(raw)
    return raw


class AnonymousEstuaryUser:
    """The user of a connection nobody authenticated: shaped like Django's
    ``AnonymousUser`` (``is_authenticated`` is false, ``id`` and ``pk`` are
    ``None``), without touching the database.

    >>> user = AnonymousEstuaryUser()
    >>> user.is_authenticated, user.is_anonymous, user.pk, user.get_username()
    (False, True, None, '')
    """

    id = None
    pk = None
    username = ""
    is_staff = False
    is_superuser = False
    is_active = False
    is_authenticated = False
    is_anonymous = True
    attributes: Mapping[str, Any] = MappingProxyType({})

    def get_username(self) -> str:
        """The empty name, as ``AnonymousUser.get_username()`` gives."""
        return self.username

    def __str__(self) -> str:
        return "AnonymousUser"

    def __repr__(self) -> str:
        return "<AnonymousEstuaryUser>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnonymousEstuaryUser)

    def __hash__(self) -> int:
        return 1


class EstuaryUser:
    """The user Estuary authenticated for the connection (a Django session, a
    JWT or the connect callback), shaped like a Django user for what a
    consumer usually reads.

    ``id`` and ``pk`` are the user's id, an integer when Estuary sent a
    canonical decimal (Django's default primary keys), else the string;
    ``username`` and ``get_username()`` its name; ``attributes`` the
    read-only map the authentication gave, whose keys can also be read as
    attributes (``user.plan``). ``is_staff`` and ``is_superuser`` are the
    attributes of those names, false when absent.

    >>> user = EstuaryUser("7", "carol", {"plan": "pro"})
    >>> user.id, user.username, user.plan, user.is_staff, user.attributes["plan"]
    (7, 'carol', 'pro', False, 'pro')
    >>> EstuaryUser("auth0|5f2", "dave").pk
    'auth0|5f2'
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, id: int | str, name: str | None = None, attributes: Mapping[str, Any] | None = None):
        self.id = self.pk = _user_id(id)
        self.username = name if name is not None else str(id)
        self.attributes: Mapping[str, Any] = MappingProxyType(dict(attributes or {}))

    @property
    def is_staff(self) -> bool:
        """The ``is_staff`` attribute, false when absent."""
        return bool(self.attributes.get("is_staff", False))

    @property
    def is_superuser(self) -> bool:
        """The ``is_superuser`` attribute, false when absent."""
        return bool(self.attributes.get("is_superuser", False))

    def get_username(self) -> str:
        """The user's name, as Django's ``get_username()``."""
        return self.username

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not regular attributes.
        if not name.startswith("_"):
            attributes = self.__dict__.get("attributes", {})
            if name in attributes:
                return attributes[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __str__(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"<EstuaryUser id={self.id!r} username={self.username!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EstuaryUser) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("EstuaryUser", self.id))


def build_user(raw: Any) -> EstuaryUser | AnonymousEstuaryUser:
    """The user object for the scope's ``user`` as Estuary sends it (``None``
    for an anonymous visitor, else ``{"id", "name", "attributes"}``)."""
    if raw is None:
        return AnonymousEstuaryUser()
    if not isinstance(raw, dict) or "id" not in raw:
        raise ProtocolError("the scope's user must be null or a map with an id")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise ProtocolError("the user's name must be a string")
    attributes = raw.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise ProtocolError("the user's attributes must be a map")
    return EstuaryUser(raw["id"], name, attributes)


def _as_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ProtocolError(f"{what} must be bytes or a string")


def build_scope(raw: Any) -> dict[str, Any]:
    """The scope for ``self.scope``, from the event's ``scope``.

    Missing keys get the value an empty request would have; a key of the
    wrong type raises :class:`ProtocolError`. Keys this function does not
    know are kept as they are.
    """
    if not isinstance(raw, dict):
        raise ProtocolError("the event's scope must be a map")
    scope = dict(raw)
    scope["type"] = raw.get("type", "websocket")
    scope["path"] = raw.get("path", "")
    scope["query_string"] = _as_bytes(raw.get("query_string", b""), "query_string")
    headers = raw.get("headers", [])
    if not isinstance(headers, list):
        raise ProtocolError("headers must be a list of [name, value] pairs")
    pairs = []
    for pair in headers:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ProtocolError("headers must be a list of [name, value] pairs")
        pairs.append((_as_bytes(pair[0], "a header name"), _as_bytes(pair[1], "a header value")))
    scope["headers"] = pairs
    route = raw.get("url_route") or {}
    if not isinstance(route, dict):
        raise ProtocolError("url_route must be a map")
    args, kwargs = route.get("args", []), route.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ProtocolError("url_route must hold a list of args and a map of kwargs")
    scope["url_route"] = {"args": tuple(args), "kwargs": dict(kwargs)}
    for key, kind, default in (("query", dict, {}), ("groups", list, []), ("subprotocols", list, [])):
        value = raw.get(key, default)
        if not isinstance(value, kind):
            raise ProtocolError(f"{key} must be a {kind.__name__}")
        scope[key] = value
    scope["user"] = build_user(raw.get("user"))
    return scope

