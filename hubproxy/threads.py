"""Thread pools with their threads started up front, not by the event loop in the middle of a request.

``ThreadPoolExecutor`` starts a new thread when a task finds no idle one, inside ``submit``, and waits there
until the new thread runs. On a busy machine that wait is long: in a cold download of a 15-file repo on
two cores the event loop spent 170 ms of its 220 ms of work waiting for new threads of the default pool,
while every request in the process waited with it. Starting the threads at startup costs a few
milliseconds and about nothing in memory (an idle thread's stack is reserved, not used).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

#: Longest wait for a pool's threads to start.
START_TIMEOUT = 10.0


def start_threads(pool: ThreadPoolExecutor, count: int) -> None:
    """Start ``count`` threads of ``pool`` (at most its ``max_workers``) now; blocks until they run.

    Each of ``count`` tasks waits for all the others, so that none can take a second: the pool must start
    a thread for each."""
    barrier = threading.Barrier(count + 1)

    def meet() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(START_TIMEOUT)

    waiting = [pool.submit(meet) for _ in range(count)]
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(START_TIMEOUT)
    for task in waiting:
        task.result()


async def submit_from_worker(pool: Executor, fn: Callable[..., T], *args: object) -> Future[T]:
    """Hand ``fn(*args)`` to ``pool`` in the caller's context; returns its future once submitted. Submitted from a
    worker thread of the default pool: for pools too large to start up front (a fill's lanes), where starting a
    new thread inside ``submit`` held the event loop for 100 ms and more when many started together."""
    return await asyncio.to_thread(pool.submit, contextvars.copy_context().run, fn, *args)


async def run_in(pool: Executor | None, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a thread of ``pool`` (the default pool if None), in the caller's context, as
    ``asyncio.to_thread`` runs it in the default pool: for calls that wait on something slow (a bucket, a CDN),
    which must not hold the threads every disk and database call of the process shares."""
    if pool is None:
        return await asyncio.to_thread(fn, *args)
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, call)
