"""Background loops stop when cancelled, even when their event fires at the same moment."""

from __future__ import annotations

import asyncio

from hubproxy.background import wake_or_timeout


async def _loop(event: asyncio.Event, rounds: list[int]) -> None:
    while True:
        await wake_or_timeout(event, 5.0)
        event.clear()
        rounds.append(1)


def test_a_cancellation_arriving_with_the_event_is_not_lost() -> None:
    async def scenario() -> bool:
        event, rounds = asyncio.Event(), []
        task = asyncio.create_task(_loop(event, rounds))
        await asyncio.sleep(0.01)
        event.set()  # the loop's wake-up and the shutdown arrive in the same turn of the event loop
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        return task in done and task.cancelled()

    assert asyncio.run(scenario())


def test_it_wakes_on_the_event_and_on_the_timeout() -> None:
    async def scenario() -> tuple[bool, bool]:
        event = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, event.set)
        woken = await wake_or_timeout(event, 5.0)
        event.clear()
        timed_out = await wake_or_timeout(event, 0.01)
        return woken, timed_out

    assert asyncio.run(scenario()) == (True, False)
