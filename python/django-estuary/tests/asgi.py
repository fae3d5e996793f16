# The application `runworker estuary-tests --layer redis` serves in the Redis test.
import django

django.setup()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter  # noqa: E402

from . import consumers  # noqa: E402

application = ProtocolTypeRouter(
    {"channel": ChannelNameRouter({"estuary-tests": consumers.RedisGated.as_worker()})}
)
