"""Whether a fill's first answer (the probe) is fast enough to carry the rest of the blob alone, or more connections
should start (``parts.py``).

The probe is timed over its first ``RAMP_BYTES``, over its reads and over the whole stretch from its first read to
its last. Over its reads, because the writes between them are not the stream's speed: timed with the page faults of
new buffers and page-cache writes, a fast loopback stream once measured 321-475 MB/s against the 300 MB/s threshold
and went parallel in two of six fills. Over the whole stretch too, because what arrives while a write stalls waits
in the socket and comes at once to the next read: a CDN connection held to 100 MB/s measured 111-124 MB/s over its
reads, and once, in a benchmark run, over 300 MB/s; that GiB then came down the one connection in 11 s instead of
1.4-1.9 s in parts (with one 50 ms stall injected into the probe's first writes: 10.8 s in every round before,
1.5-1.6 s since). The cost falls the other way: a fast stream whose first writes stall goes parallel (unthrottled
loopback with that stall, 1.5-1.8 s against 1.2-1.3 s), which costs CPU, not most of the fill's speed. A second
look after a stall was tried and not kept: the bytes queued during the stall came at once to it, and a throttled
stream passed for fast again in two of three rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Bytes of the probe's answer its stream's speed is timed over.
RAMP_BYTES = 4 * 1024 * 1024


def stream_is_fast(received: int, reading: float, elapsed: float, fast_bps: float) -> bool:
    """``received`` bytes at ``fast_bps`` or more over the ``reading`` seconds their reads took, and at half that or
    more over the ``elapsed`` seconds from the first read to the last. 0: never fast (always parallel)."""
    if not fast_bps:
        return False
    return received >= fast_bps * max(reading, 1e-6) and received >= fast_bps / 2 * max(elapsed, 1e-6)


class StreamTimer:
    """Times a probe's answer of ``size`` bytes as it is read; once ``ramp`` bytes have come (or the answer ended
    before), calls ``told(fast, received, reading, elapsed)``."""

    def __init__(self, size: int, fast_bps: float, told: Callable[[bool, int, float, float], None],
                 ramp: int = RAMP_BYTES) -> None:
        self.fast_bps = fast_bps
        self.told = told
        self.ramp = min(ramp, size)
        self.received = 0
        self.reading = 0.0
        self.began: float | None = None  # when the first read started
        self.decided = False

    def read(self, got: int, seconds: float | None) -> None:
        """``got`` more bytes were read, their read taking ``seconds`` (None: not separable from the writes, so the
        whole stretch counts); 0 bytes: the answer ended."""
        if self.decided:
            return
        if self.began is None:
            self.began = time.monotonic() - (seconds or 0.0)
        self.received += got
        self.reading += seconds or 0.0
        if self.received < self.ramp and got:
            return
        self.decided = True
        elapsed = time.monotonic() - self.began
        reading = elapsed if seconds is None else self.reading
        self.told(stream_is_fast(self.received, reading, elapsed, self.fast_bps), self.received, reading, elapsed)
