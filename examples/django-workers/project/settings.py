"""Settings of the Django workers example: Django runs the consumers (in
`runworker`), Estuary holds the sockets (estuary.toml). Both share the Redis
channel layer below."""

import os
import sys
from pathlib import Path

from django_estuary.settings import channel_layers

BASE_DIR = Path(__file__).resolve().parent.parent

# Development values: set the variables for anything but a local try.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only: the secret key of the Django workers example")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "chat",
    "notifications",
    "assistant",
    "dashboard",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
# `runworker` serves the "channel" part of this application.
ASGI_APPLICATION = "project.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "static/"
LOGIN_REDIRECT_URL = "/"

# The channel layer Estuary shares: the same Redis and prefix as estuary.toml's [layer].
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# The key prefix; tests give each run its own (CHANNEL_LAYER_PREFIX).
CHANNEL_LAYER_PREFIX = os.environ.get("CHANNEL_LAYER_PREFIX", "asgi")
CHANNEL_LAYERS = channel_layers(REDIS_URL, prefix=CHANNEL_LAYER_PREFIX)
# The chat's roster of signed-in names and the dashboard's last values, shared by
# every worker process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{CHANNEL_LAYER_PREFIX}.workers-example",
    }
}

# Estuary's [auth.callback] secret (the same value on both sides; at least 16 bytes).
ESTUARY_CALLBACK_SECRET = os.environ.get("ESTUARY_CALLBACK_SECRET", "dev-only: the callback secret of the example")
# What the push views (POST /notify/<id>/, POST /dashboard/metrics/<name>/) want
# in `Authorization: Bearer ...`.
EXAMPLE_PUSH_TOKEN = os.environ.get("EXAMPLE_PUSH_TOKEN", "dev-push-token")

# How long the assistant's fake model waits between two chunks, in seconds.
ASSISTANT_CHUNK_DELAY = float(os.environ.get("ASSISTANT_CHUNK_DELAY", "0.15"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler", "stream": sys.stderr}},
    "loggers": {"django_estuary": {"handlers": ["console"], "level": "INFO"}},
}
