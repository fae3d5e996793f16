"""Settings helpers: the channel layer Estuary shares, and the secrets it signs with.

In ``settings.py``::

    from django_estuary.settings import channel_layers

    CHANNEL_LAYERS = channel_layers("redis://127.0.0.1:6379/0", prefix="asgi")
    ESTUARY_CALLBACK_SECRET = os.environ["ESTUARY_CALLBACK_SECRET"]
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from django.core.exceptions import ImproperlyConfigured

__all__ = ["MIN_SECRET_LEN", "callback_secret", "channel_layers", "events_secret"]

#: The shortest secret Estuary accepts for its callbacks, in bytes.
MIN_SECRET_LEN = 16

_BACKENDS = {
    # channels_redis's core layer, each message of a worker channel given to
    # one reader only (django_estuary.layers).
    "core": "django_estuary.layers.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}


def channel_layers(
    hosts: str | Iterable[str] = "redis://127.0.0.1:6379/0",
    *,
    prefix: str = "asgi",
    flavour: str = "core",
    socket_timeout: float = 30,
    alias: str = "default",
    **config: Any,
) -> dict[str, dict[str, Any]]:
    """``CHANNEL_LAYERS`` for a channels_redis layer shared with Estuary.

    ``hosts`` is one Redis URL or several (in the same order as Estuary's
    ``[layer] redis``); ``prefix`` must be Estuary's ``[layer] prefix``;
    ``flavour`` is ``"core"`` or ``"pubsub"`` as Estuary's. ``"core"`` is
    :class:`django_estuary.layers.RedisChannelLayer`, channels_redis's core
    layer delivering each event of a worker channel to one ``runworker``
    only; ``"pubsub"`` gives every reader every message, so run one worker
    per channel with it. Each host gets
    redis-py's ``socket_timeout`` (30 s): redis-py 8's default of 5 s equals
    the layer's blocking pop and tears down idle workers (docs/DJANGO.md).
    Further keywords (``capacity``, ``expiry``, ``group_expiry``,
    ``symmetric_encryption_keys``, ...) go into ``CONFIG`` as they are.
    ``"memory://"`` gives Channels' in-memory layer, for tests only: Estuary
    cannot share it.

    >>> channel_layers("redis://10.0.0.5:6379/0", prefix="shop", capacity=200)["default"]["CONFIG"]
    {'hosts': [{'address': 'redis://10.0.0.5:6379/0', 'socket_timeout': 30}], 'prefix': 'shop', 'capacity': 200}
    >>> channel_layers("memory://")
    {'default': {'BACKEND': 'channels.layers.InMemoryChannelLayer'}}
    """
    if hosts == "memory://":
        return {alias: {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    if flavour not in _BACKENDS:
        raise ImproperlyConfigured(f"flavour must be one of {sorted(_BACKENDS)}, not {flavour!r}")
    urls = [hosts] if isinstance(hosts, str) else list(hosts)
    if not urls or not all(isinstance(url, str) and url for url in urls):
        raise ImproperlyConfigured("channel_layers() needs at least one Redis URL")
    return {
        alias: {
            "BACKEND": _BACKENDS[flavour],
            "CONFIG": {
                "hosts": [{"address": url, "socket_timeout": socket_timeout} for url in urls],
                "prefix": prefix,
                **config,
            },
        }
    }


def _secret(name: str) -> str | None:
    from django.conf import settings

    value = getattr(settings, name, None) or os.environ.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"{name} must be a string")
    if len(value.encode("utf-8")) < MIN_SECRET_LEN:
        raise ImproperlyConfigured(f"{name} must be at least {MIN_SECRET_LEN} bytes, as Estuary requires")
    return value


def callback_secret() -> str:
    """The secret Estuary signs its connect callbacks with: the setting
    ``ESTUARY_CALLBACK_SECRET``, else the environment variable of that name
    (Estuary's ``[auth.callback] secret``)."""
    value = _secret("ESTUARY_CALLBACK_SECRET")
    if value is None:
        raise ImproperlyConfigured("set ESTUARY_CALLBACK_SECRET (in settings or the environment): Estuary's [auth.callback] secret")
    return value


def events_secret() -> str:
    """The secret Estuary signs the events of ``http = ...`` routes with:
    ``ESTUARY_EVENTS_SECRET`` (setting, else environment), else the
    callback's secret."""
    value = _secret("ESTUARY_EVENTS_SECRET")
    if value is not None:
        return value
    value = _secret("ESTUARY_CALLBACK_SECRET")
    if value is None:
        raise ImproperlyConfigured("set ESTUARY_EVENTS_SECRET (in settings or the environment): the secret Estuary signs events with")
    return value
