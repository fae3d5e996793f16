# The Django settings of django-estuary's tests: the in-memory channel layer
# plays Estuary's side by default; the alias "redis" is the machine's Redis at
# 127.0.0.1:6379 under a prefix of this run's own (shared with the runworker
# process a test starts, through the environment).
import os
import uuid

from django_estuary.settings import channel_layers

REDIS_URL = os.environ.get("DJANGO_ESTUARY_TEST_REDIS", "redis://127.0.0.1:6379/0")
REDIS_PREFIX = os.environ.setdefault("DJANGO_ESTUARY_TEST_PREFIX", f"django-estuary-test-{uuid.uuid4().hex[:12]}")

SECRET_KEY = "the secret key of django-estuary's tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ASGI_APPLICATION = "tests.asgi.application"

CHANNEL_LAYERS = {
    **channel_layers("memory://"),
    **channel_layers(REDIS_URL, prefix=REDIS_PREFIX, alias="redis"),
}

ESTUARY_CALLBACK_SECRET = "the callback secret of the tests"
ESTUARY_EVENTS_SECRET = "the events secret of the tests"
