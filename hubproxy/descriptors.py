"""Descriptors a worker thread owns, so that a number it still uses is never someone else's.

When an event-loop task hands a descriptor to a thread and is then cancelled (a client lost, a fill given up),
the task's side closes the descriptor while the thread may still use it; Linux soon gives the freed number to
the next file or connection opened, and the thread then reads or writes that one instead. Every blocking call
that outlives such a cancellation therefore runs on duplicates made for it (``duplicate``, on the event loop)
and closes them itself when it ends, whoever still waits for it. ``call_owning``
runs such a call and never withdraws it: a call cancelled before a thread took it would never close them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")


def duplicate(*fds: int) -> tuple[int, ...]:
    """Duplicates of ``fds`` for one call; none left open if one cannot be made (``OSError``, e.g. EMFILE)."""
    own: list[int] = []
    try:
        for fd in fds:
            own.append(os.dup(fd))
    except OSError:
        for fd in own:
            os.close(fd)
        raise
    return tuple(own)


def _run_closing(func: Callable[..., T], own: tuple[int, ...], *args: object) -> T:
    """(In a thread.) ``func(own, *args)``, then close ``own``, also when nobody waits for the result any more."""
    try:
        return func(own, *args)
    finally:
        for fd in own:
            os.close(fd)


async def call_owning(executor: Executor | None, func: Callable[..., T], own: tuple[int, ...], *args: object) -> T:
    """``func(own, *args)`` in a thread of ``executor`` (None: the loop's default), ``own`` closed by it when it
    ends. Cancelling the caller leaves the call to run (a queued call withdrawn would leave ``own`` open)."""
    call = asyncio.get_running_loop().run_in_executor(executor, _run_closing, func, own, *args)
    return await _run_to_its_end(call, _retrieve)


async def open_for_reading(path: str) -> int:
    """``os.open(path, O_RDONLY)`` in a worker thread (the file may be on NFS). If the caller is cancelled while
    it runs, the descriptor it opens is closed once it is open, not left behind."""
    opening = asyncio.get_running_loop().run_in_executor(None, os.open, path, os.O_RDONLY)
    return await _run_to_its_end(opening, _close_result)


async def _run_to_its_end(call: asyncio.Future[T], abandoned: Callable[[asyncio.Future[T]], None]) -> T:
    """Await ``call``; if the caller is cancelled first, the call still runs and ``abandoned`` gets it when done."""
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        call.add_done_callback(abandoned)
        raise


def _retrieve(call: asyncio.Future[object]) -> None:
    if not call.cancelled():
        call.exception()  # nobody waits for it any more; what it raised is of no use


def _close_result(opening: asyncio.Future[int]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        os.close(opening.result())
