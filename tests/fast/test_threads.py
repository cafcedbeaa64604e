"""``threads.py``: a pool's threads started up front."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from hubproxy.threads import start_threads


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
