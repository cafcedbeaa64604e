"""A lane: the worker thread that receives one part's answer on a blocking connection, batch after batch, writes
each batch into the spool file and lends it to the fill's hasher (``hashfeed.py``).

The socket's buffer keeps receiving while a batch is written, and the hash follows the prefix in a thread of its
own: receiving, writing and hashing overlap without a hand-off through the event loop per batch, for one stream
as for many parts. A direct lane (the blob's one fast stream on a spool that takes ``O_DIRECT``) receives into
page-aligned buffers, has a thread of its own write them past the page cache (``spoolwriter.py``) and keeps its
last buffers for the fill's readers to be sent from. An unpaged lane (one of a parallel fill's parts on such a
spool) also receives into page-aligned buffers and writes their whole pages past the page cache, itself, between
receives: its socket is held to a fraction of the disk's speed. Its buffers are its connection's (``ring``), from
part to part, and the feed holds its batches until the hash and the readers passed them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hubproxy.cache.hashfeed import HashFeed
from hubproxy.cache.lanebuffers import ALIGN, LaneBuffers
from hubproxy.cache.probespeed import StreamTimer
from hubproxy.cache.spool import SpoolFile
from hubproxy.cache.spoolwriter import SpoolWriter
from hubproxy.upstream.ranged import RangeConnection

#: Batch size of each part received by a lane (one such buffer per part in flight, and a few more while the
#: hasher uses the batches it lent: ``lanebuffers.py``).
LANE_BATCH_BYTES = 1024 * 1024
#: Batch size of a direct lane (one per fill, its buffers kept for readers): every batch costs a loan, a write, a
#: telling of the event loop and a piece sent to each reader. One cold GiB (``benchmarks/cold_ab.py``, four
#: rounds in turns): 1 MiB batches 1.30-1.55 s at 1.77-1.97 hubproxy core-seconds, 4 MiB 1.12-1.25 s at
#: 1.46-1.52; 8 MiB (four buffers) against 4 MiB: 1.08-1.14 s and 1.09-1.17 s, 1.32-1.40 and 1.37-1.42.
DIRECT_BATCH_BYTES = 4 * 1024 * 1024
#: Most bytes of the blob's first batch, handed over with whatever the first read finds: its first bytes reach
#: readers as soon as they arrive, not once a whole batch has come and been written.
FIRST_BATCH_BYTES = 256 * 1024


def receive_part(conn: RangeConnection, spool: SpoolFile, feed: HashFeed, start: int, end: int, *, direct: bool,
                 landed: Callable[[int], None], prefix_reached: Callable[[], bool], stop: threading.Event,
                 max_wait: float, timer: StreamTimer | None = None,
                 unpaged: bool = False, ring: LaneBuffers | None = None) -> None:
    """(In a lane thread.) Receive bytes ``[start, end)`` from ``conn``'s answer into the spool file until they are
    all there, the answer ends or ``stop`` is set; ``landed(pos)`` (callable from any thread) is told, in order,
    that every byte before ``pos`` is in the file. A batch is handed over after at most ``max_wait`` seconds of
    receiving. ``prefix_reached()``: whether every byte before ``start`` is written. What arrived before a drop is
    kept (written before the error is raised). ``timer``: the probe's, told of every read and how long it took
    (``probespeed.py``).
    ``direct``: the blob's one fast stream, written past the page cache by a writer thread, its buffers kept for
    readers; ``unpaged``: a parallel part, its whole pages written past the page cache by this thread. ``ring``: the
    buffers of the lane's earlier parts, to receive this one into (their loans are then left to its owner)."""
    # Direct writes wait for the disk: a thread of their own makes them while this one receives.
    writer = SpoolWriter(spool, start, landed) if direct else None
    owned = ring is None
    if ring is None:
        ring = LaneBuffers(feed, min(DIRECT_BATCH_BYTES if direct else LANE_BATCH_BYTES, end - start),
                           aligned=direct or unpaged, wait_written=writer.wait_written if writer else None)
    pos = start
    try:
        while pos < end and not stop.is_set():
            skew = pos % ALIGN if direct or unpaged else 0
            buf = ring.next()[skew:skew + min(ring.size, end - pos)]
            began = time.monotonic()
            if pos == 0:  # the blob's first bytes: to its readers as soon as they arrive
                got = conn.read_into(buf, min(len(buf), FIRST_BATCH_BYTES), 0.0)
                if direct and got % ALIGN and got < len(buf):  # the batches after it start on a page
                    got += conn.read_into(buf[got:], ALIGN - got % ALIGN, max_wait)
            else:
                got = conn.read_into(buf, len(buf), max_wait)
            if timer is not None:
                timer.read(got, time.monotonic() - began)
            if not got or stop.is_set():
                return
            batch = buf[:got]
            if unpaged:
                spool.write_unpaged(batch, pos)
            elif writer is None:
                spool.write_at([batch], pos)
            ring.written(pos, batch, prefix_reached())
            if writer is None:
                landed(pos + got)
            else:
                writer.put(batch, pos)
            pos += got
    finally:
        try:
            if writer is not None:  # what arrived before a drop is kept; after a stop, nothing more is written
                writer.close(drain=not stop.is_set())
        finally:
            if pos < end:
                ring.close()
            elif owned and not direct:  # a direct lane's last loans stay for the readers still sending from them
                ring.finish()
