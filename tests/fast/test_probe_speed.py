"""The probe's speed (``cache/probespeed.py``): a throttled stream is not taken for a fast one because a write stalled
between its reads.

A fill's first answer is timed over its first bytes; a stream judged fast carries the whole blob alone. Bytes that
arrive while the lane writes wait in the socket and come at once to the next read: timed over its reads alone, a
throttled stream looked fast after a stalled write, and a GiB behind a 100 MB/s-per-connection CDN then took 11 s
in one stream instead of 1.5 s in parts.
"""

from __future__ import annotations

import threading
import time

import pytest

from hubproxy.cache.hashfeed import HashFeed
from hubproxy.cache.lane import receive_part
from hubproxy.cache.probespeed import StreamTimer, stream_is_fast

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
    """A spool whose first ``stalls`` writes each take ``stall`` seconds (a busy disk, a VM's hiccup)."""

    def __init__(self, stall: float, stalls: int = 1) -> None:
        self.stall = stall
        self.stalls = stalls
        self.writes = 0

    def write_unpaged(self, batch: memoryview, pos: int) -> None:
        self.writes += 1
        if self.writes <= self.stalls:
            time.sleep(self.stall)


def probe(rate: float, size: int, spool: StallingSpool, fast_bps: float, ramp: int) -> tuple[bool, int, float, float]:
    """Receive a probe of ``size`` bytes arriving at ``rate`` into ``spool`` in a lane, timed: what the timer told."""
    told: list[tuple[bool, int, float, float]] = []
    timer = StreamTimer(size, fast_bps, lambda *verdict: told.append(verdict), ramp=ramp)
    receive_part(SteadyStream(rate, size), spool, HashFeed(limit=0), 0, size,  # type: ignore[arg-type]
                 direct=False, unpaged=True, landed=lambda pos: None, prefix_reached=lambda: True,
                 stop=threading.Event(), max_wait=0.05, timer=timer)
    [verdict] = told
    return verdict


def test_a_stalled_write_does_not_make_a_throttled_stream_fast() -> None:
    rate, stall = 20e6, 0.08  # 1 MiB at 20 MB/s: 52 ms; the first write stalls longer than that
    fast, received, reading, elapsed = probe(rate, 3 * MIB, StallingSpool(stall), 2.5 * rate, MIB)
    assert received >= MIB and elapsed >= stall and reading < elapsed - stall / 2  # the stall is not in the reads
    assert received / reading > 2.5 * rate  # over its reads alone the stream looks faster than the threshold
    assert not fast


def test_a_fast_stream_whose_first_write_stalls_goes_parallel() -> None:
    # The cheaper mistake: more connections than needed cost CPU, a throttled stream kept alone most of the speed.
    fast, *_ = probe(2e9, 3 * MIB, StallingSpool(0.08), 300e6, MIB)
    assert not fast
    fast, *_ = probe(2e9, 3 * MIB, StallingSpool(0.0), 300e6, MIB)
    assert fast


def test_a_steady_stream_is_judged_by_its_speed() -> None:
    fast, received, *_ = probe(20e6, 3 * MIB, StallingSpool(0.0), 50e6, MIB)
    assert not fast and received >= MIB
    fast, *_ = probe(20e6, 3 * MIB, StallingSpool(0.0), 5e6, MIB)
    assert fast


def test_a_probe_shorter_than_the_ramp_is_judged_on_all_of_it() -> None:
    fast, received, *_ = probe(20e6, MIB // 2, StallingSpool(0.0), 5e6, MIB)
    assert fast and received == MIB // 2


def test_timed_with_the_writes_the_whole_stretch_is_the_reads_time() -> None:
    told: list[tuple[bool, int, float, float]] = []
    timer = StreamTimer(3 * MIB, 50e6, lambda *verdict: told.append(verdict), ramp=MIB)
    timer.read(MIB // 2, None)
    time.sleep(0.03)  # 1 MiB in 30 ms or more: about 35 MB/s, end to end
    timer.read(MIB // 2, None)
    timer.read(MIB, None)  # told once only
    [(fast, received, reading, elapsed)] = told
    assert not fast and received == MIB and reading == elapsed
