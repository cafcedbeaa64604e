"""Waiting in the server's background loops without losing a shutdown.

``asyncio.wait_for(event.wait(), timeout)`` can swallow a cancellation that arrives just as the event
is set (CPython 3.10 and 3.11): the loop then runs on and the server never finishes stopping.
``wake_or_timeout`` waits the same way and always lets the cancellation through.
"""

from __future__ import annotations

import asyncio


async def wake_or_timeout(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; returns whether it was set."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()
