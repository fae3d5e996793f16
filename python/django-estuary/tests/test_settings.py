import os
import unittest
from unittest import mock

from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase, override_settings

from django_estuary.settings import callback_secret, channel_layers, events_secret


class ChannelLayers(unittest.TestCase):
    def test_every_host_gets_the_socket_timeout(self):
        layers = channel_layers(["redis://a:6379/0", "redis://b:6379/0"], prefix="shop", group_expiry=3600)
        self.assertEqual(
            layers,
            {
                "default": {
                    "BACKEND": "django_estuary.layers.RedisChannelLayer",
                    "CONFIG": {
                        "hosts": [
                            {"address": "redis://a:6379/0", "socket_timeout": 30},
                            {"address": "redis://b:6379/0", "socket_timeout": 30},
                        ],
                        "prefix": "shop",
                        "group_expiry": 3600,
                    },
                }
            },
        )

    def test_pubsub_and_aliases(self):
        layers = channel_layers("redis://a:6379/0", flavour="pubsub", alias="events", socket_timeout=60)
        self.assertEqual(layers["events"]["BACKEND"], "channels_redis.pubsub.RedisPubSubChannelLayer")
        self.assertEqual(layers["events"]["CONFIG"]["hosts"][0]["socket_timeout"], 60)

    def test_mistakes(self):
        with self.assertRaises(ImproperlyConfigured):
            channel_layers([])
        with self.assertRaises(ImproperlyConfigured):
            channel_layers("redis://a", flavour="sentinel")


class Secrets(SimpleTestCase):
    @override_settings(ESTUARY_CALLBACK_SECRET=None, ESTUARY_EVENTS_SECRET=None)
    def test_from_the_environment(self):
        with mock.patch.dict(os.environ, {"ESTUARY_CALLBACK_SECRET": "sixteen bytes at least"}):
            self.assertEqual(callback_secret(), "sixteen bytes at least")
            self.assertEqual(events_secret(), "sixteen bytes at least")
        with mock.patch.dict(os.environ, {"ESTUARY_EVENTS_SECRET": "the events' own secret"}):
            self.assertEqual(events_secret(), "the events' own secret")

    @override_settings(ESTUARY_CALLBACK_SECRET=None, ESTUARY_EVENTS_SECRET=None)
    def test_missing_or_short_secrets_are_configuration_errors(self):
        with mock.patch.dict(os.environ, {}, clear=True):
            with self.assertRaises(ImproperlyConfigured):
                callback_secret()
            with self.assertRaises(ImproperlyConfigured):
                events_secret()
        with override_settings(ESTUARY_CALLBACK_SECRET="short"):
            with self.assertRaises(ImproperlyConfigured):
                callback_secret()
