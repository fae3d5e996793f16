"""What the tests share beyond django_estuary.testing."""

import asyncio

from django_estuary.testing import FakeEstuary, running_worker, scope  # noqa: F401  (re-exported)


async def settle(condition, turns=200):
    """Lets the event loop run until ``condition()`` holds, at most ``turns``
    times round (no clock involved); raises if it never does."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")
