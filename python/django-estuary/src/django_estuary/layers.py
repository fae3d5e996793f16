"""The Redis channel layer for workers that share a channel with Estuary.

:class:`RedisChannelLayer` is channels_redis's core layer with one change:
a message on a channel that several processes read (a worker channel, such
as ``chat`` read by every ``runworker chat``) goes to exactly one reader.

channels_redis moves each message it pops into a backup queue
(``<channel>$inflight``) and removes it from there a moment later, and every
reader first puts whatever is in that backup queue back into the channel. A
single reader recovers a message its cancelled ``receive()`` left behind;
with two readers, one puts back the message the other is already handling,
and the event runs twice, the second time out of order. The channel layer
specification asks for at-most-once delivery, and the relay protocol relies
on it: Estuary sends a connection's next event only once the last one is
acknowledged, and tells the client when one is never acknowledged (a lost
event is reported; a duplicate would not be). So on such channels this
layer pops the message and keeps no backup. A process's own channels
(``specific.<process>!``, one reader) keep channels_redis's behaviour.

:func:`~django_estuary.settings.channel_layers` configures it for the
``core`` flavour.

>>> from django_estuary.settings import channel_layers
>>> channel_layers("redis://127.0.0.1:6379/0")["default"]["BACKEND"]
'django_estuary.layers.RedisChannelLayer'
>>> RedisChannelLayer(hosts=["redis://127.0.0.1:6379/0"], prefix="shop").prefix
'shop'
"""

from __future__ import annotations

from channels_redis.core import RedisChannelLayer as _ChannelsRedisLayer

__all__ = ["RedisChannelLayer"]


def _shared(channel_key: str) -> bool:
    """Whether the channel key is one several processes may read (not a
    process's own ``specific.<process>!``)."""
    return not channel_key.endswith("!")


class RedisChannelLayer(_ChannelsRedisLayer):
    """channels_redis's ``RedisChannelLayer``, delivering each message of a
    channel several processes read to one of them only (see the module's
    text). Configure it as ``"django_estuary.layers.RedisChannelLayer"``
    with channels_redis's ``CONFIG``, or through
    :func:`~django_estuary.settings.channel_layers`."""

    async def _brpop_with_clean(self, index, channel, timeout):
        if not _shared(channel):
            return await super()._brpop_with_clean(index, channel, timeout)
        # One atomic pop: the message is this reader's alone.
        result = await self.connection(index).bzpopmin(channel, timeout=timeout)
        return None if result is None else result[1]

    async def _clean_receive_backup(self, index, channel):
        if not _shared(channel):
            await super()._clean_receive_backup(index, channel)
