# The smallest Django project that logs users in: the tests copy this folder into
# a temporary directory and point it at their own database through the environment.
import os

SECRET_KEY = os.environ["ESTUARY_DJANGO_SECRET"]
SECRET_KEY_FALLBACKS = [k for k in os.environ.get("ESTUARY_DJANGO_FALLBACKS", "").split(",") if k]
# The secret Estuary signs its connect callbacks with (estuary_connect.py).
ESTUARY_CALLBACK_SECRET = os.environ.get("ESTUARY_CALLBACK_SECRET", "")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "urls"
SESSION_ENGINE = "django.contrib.sessions.backends." + os.environ.get("ESTUARY_DJANGO_ENGINE", "db")
SESSION_COOKIE_AGE = 3600
USE_TZ = True
LOGIN_REDIRECT_URL = "/"
# Fast hashing: the tests care about the session auth hash, not the hasher.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

_db = os.environ["ESTUARY_DJANGO_DB"]
if _db.startswith("sqlite:"):
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _db[len("sqlite:"):]}}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _db[len("postgres:"):],
            "USER": os.environ.get("ESTUARY_DJANGO_PGUSER", "postgres"),
            "HOST": "127.0.0.1",
            "PORT": "5432",
        }
    }

# channels_redis, when a test gives a Redis (the same one and prefix as Estuary's).
if os.environ.get("ESTUARY_DJANGO_REDIS"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py's default 5 s socket_timeout is BZPOPMIN's: see docs/DJANGO.md.
                "hosts": [{"address": os.environ["ESTUARY_DJANGO_REDIS"], "socket_timeout": 30}],
                "prefix": os.environ["ESTUARY_DJANGO_REDIS_PREFIX"],
            },
        }
    }
