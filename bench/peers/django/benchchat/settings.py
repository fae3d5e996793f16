"""Settings of the Django Channels benchmark peer.

A minimal project shaped like the official Channels chat tutorial. Only the
channel layer is picked at run time (BENCH_LAYER), so the same code is measured
with the in-memory layer and with Redis.
"""
import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Benchmark-only project: never deployed, so a fixed key is fine.
SECRET_KEY = "bench-only-not-secret-7f3c1e9a2b"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    # The tutorial lists daphne first so that runserver serves ASGI.
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "benchchat.urls"
ASGI_APPLICATION = "benchchat.asgi.application"

# AuthMiddlewareStack only reads the DB when a session cookie is present; the
# file still has to live somewhere writable and outside the repository.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB")
        or os.path.join(tempfile.gettempdir(), "benchchat.sqlite3"),
    }
}

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _channel_layers():
    layer = os.environ.get("BENCH_LAYER", "memory")
    if layer == "memory":
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    if layer in ("redis", "pubsub"):
        backend = {
            "redis": "channels_redis.core.RedisChannelLayer",
            "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
        }[layer]
        return {
            "default": {
                "BACKEND": backend,
                "CONFIG": {
                    "hosts": [
                        {
                            "address": os.environ.get(
                                "BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"
                            ),
                            # redis-py 8 caps an asyncio pool at 100 connections
                            # and raises at once past that, so a burst of 1000
                            # joins fails half its group_add calls. Older
                            # redis-py had no cap; this restores a practical
                            # one (Redis's own default maxclients).
                            "max_connections": int(
                                os.environ.get("BENCH_REDIS_MAX_CONNECTIONS", "10000")
                            ),
                        }
                    ],
                    "prefix": os.environ.get("BENCH_REDIS_PREFIX", "bench"),
                },
            }
        }
    raise RuntimeError(f"BENCH_LAYER must be 'memory', 'redis' or 'pubsub', not {layer!r}")


# Layer options other than hosts/prefix are left at their defaults, as a team
# following the tutorial would.
CHANNEL_LAYERS = _channel_layers()

# Quiet: per-request logging would cost CPU that the benchmark attributes to
# the server.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
