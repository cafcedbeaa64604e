"""The probe's speed: a throttled stream must not pass for a fast one because a write stalled between its reads.

A fill's first request is timed over its first bytes; a stream judged fast carries the whole blob alone. Bytes that
arrive while the lane writes wait in the socket and come at once to the next read, so a stream timed over its reads
alone looked fast after a stalled write, and a GiB behind a 100 MB/s-per-connection CDN then took 11 s in one
stream instead of 1.5 s in parts (seen once in a benchmark run).
"""

from __future__ import annotations

import threading
import time

import pytest

from hubproxy.cache.hashfeed import HashFeed
from hubproxy.cache.lane import receive_part, stream_is_fast

MIB = 1024 * 1024
FAST = 300e6  # fill_single_stream_mbps's default, in bytes per second


@pytest.mark.parametrize(("received", "reading", "elapsed", "fast"), [
    (4 * MIB, 0.035, 0.041, False),  # a CDN connection held to 100 MB/s (as measured: 111-124 MB/s over its reads)
    (4 * MIB, 0.010, 0.041, False),  # the same, a write stalled: 420 MB/s over its reads, 102 MB/s in all
    (4 * MIB, 0.003, 0.012, True),  # a fast upstream, writes between the reads: 1.4 GB/s and 350 MB/s
    (4 * MIB, 0.020, 0.020, False),  # 210 MB/s throughout: below the threshold
])
def test_a_stream_is_fast_only_over_its_reads_and_over_the_whole_stretch(
        received: int, reading: float, elapsed: float, fast: bool) -> None:
    assert stream_is_fast(received, reading, elapsed, FAST) is fast


def test_no_stream_is_fast_where_fills_always_go_parallel() -> None:
    assert not stream_is_fast(4 * MIB, 1e-6, 1e-6, 0)


class SteadyStream:
    """A connection whose answer arrives at ``rate`` bytes per second from its creation, buffered without limit
    (the socket's buffer), read as ``RangeConnection.read_into`` reads."""

    def __init__(self, rate: float, total: int) -> None:
        self.rate = rate
        self.total = total
        self.taken = 0
        self.began = time.monotonic()

    def _arrived(self) -> int:
        return min(int(self.rate * (time.monotonic() - self.began)), self.total) - self.taken

    def read_into(self, buf: memoryview, limit: int, max_wait: float) -> int:
        if self.taken >= self.total:
            return 0
        while self._arrived() <= 0:
            time.sleep(0.001)
        deadline = time.monotonic() + max_wait
        while self._arrived() < limit and self.taken + self._arrived() < self.total and time.monotonic() < deadline:
            time.sleep(0.001)
        n = min(self._arrived(), limit, len(buf))
        buf[:n] = b"x" * n
        self.taken += n
        return n


class StallingSpool:
    """A spool whose first write stalls for ``stall`` seconds (a busy disk, a VM's hiccup)."""

    def __init__(self, stall: float) -> None:
        self.stall = stall
        self.writes = 0

    def write_unpaged(self, batch: memoryview, pos: int) -> None:
        self.writes += 1
        if self.writes == 1:
            time.sleep(self.stall)

    def write_at(self, batches: list[memoryview], pos: int) -> None:
        self.write_unpaged(batches[0], pos)


def test_a_lane_reports_the_whole_stretch_so_a_stalled_write_does_not_make_a_slow_stream_fast() -> None:
    rate, ramp, stall = 20e6, MIB, 0.08  # 1 MiB at 20 MB/s: 52 ms; the first write stalls longer than that
    told: list[tuple[int, float, float]] = []
    receive_part(SteadyStream(rate, ramp), StallingSpool(stall), HashFeed(limit=0), 0, ramp,  # type: ignore[arg-type]
                 direct=False, unpaged=True, landed=lambda pos: None, prefix_reached=lambda: True,
                 stop=threading.Event(), max_wait=0.05,
                 timed=(ramp, lambda n, reading, elapsed: told.append((n, reading, elapsed))))
    [(received, reading, elapsed)] = told
    assert received == ramp
    assert elapsed >= stall and reading < elapsed - stall / 2  # the stall is not in the reads
    fast_by_reads = received / reading
    assert fast_by_reads > 2.5 * rate  # over its reads alone the stream looks several times faster than it is
    assert not stream_is_fast(received, reading, elapsed, 2.5 * rate)  # and is not taken for fast
    assert stream_is_fast(received, reading, elapsed, 0.5 * rate)  # while a stream far below it still is
