"""``threads.py``: a pool's threads started up front; calls run in a pool of their own."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

from hubproxy.threads import run_in, start_threads

REQUEST = contextvars.ContextVar("request", default="none")


def _named(prefix: str) -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(prefix)}


def test_every_thread_runs_before_the_first_task() -> None:
    pool = ThreadPoolExecutor(6, "prestart-test")
    try:
        assert _named("prestart-test") == set()
        start_threads(pool, 6)
        started = _named("prestart-test")
        assert len(started) == 6
        # Tasks now run on those threads; none is started for them.
        names = set(pool.map(lambda _: threading.current_thread().name, range(50)))
        assert names <= started
        assert _named("prestart-test") == started
    finally:
        pool.shutdown()


def test_a_call_runs_in_the_pool_given_with_the_callers_context() -> None:
    pool = ThreadPoolExecutor(2, "run-in-test")

    def where() -> tuple[str, str]:
        return threading.current_thread().name, REQUEST.get()

    async def main() -> tuple[tuple[str, str], tuple[str, str]]:
        REQUEST.set("req-1")
        return await run_in(pool, where), await run_in(None, where)

    try:
        (own, own_request), (default, default_request) = asyncio.run(main())
        assert own.startswith("run-in-test") and own_request == "req-1"
        assert not default.startswith("run-in-test") and default_request == "req-1"
    finally:
        pool.shutdown()
