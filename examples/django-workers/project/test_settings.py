"""The example's settings for its tests (`python manage.py test`): Channels'
in-memory layer plays the shared one, a local cache the Redis one."""

from .settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ESTUARY_CALLBACK_SECRET = "the callback secret of the example's tests"
EXAMPLE_PUSH_TOKEN = "the push token of the example's tests"
ASSISTANT_CHUNK_DELAY = 0
