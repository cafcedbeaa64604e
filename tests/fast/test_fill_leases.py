"""Two replicas' fill managers on one database: requests that arrive while a lease is checked."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from hubproxy.cache.fill import Fill, FillManager
from hubproxy.cache.filler import Filler
from hubproxy.cache.lease import FillLeases, Holder
from hubproxy.cache.spool import Spool
from hubproxy.config import Settings
from hubproxy.db import make_engine
from hubproxy.store.local import LocalBlobStore
from hubproxy.upstream.client import UpstreamClient

KEY = hashlib.sha256(b"a blob another replica fills").hexdigest()


def _manager(data_dir: Path, engine, owner: str) -> FillManager:  # noqa: ANN001
    upstream = UpstreamClient(Settings(data_dir=data_dir))
    filler = Filler(upstream, retries=0, connections=1, part_bytes=1 << 24, fast_stream_mbps=0)
    leases = FillLeases(engine, owner, f"http://{owner}.invalid:8000", ttl=30)
    return FillManager(LocalBlobStore(data_dir), Spool(data_dir), engine, filler, leases)


def test_requests_that_arrive_while_the_lease_is_checked_relay_the_holder(tmp_path: Path) -> None:
    """Replica a holds the lease; requests keep reaching replica b. Each first request locks b's spool file,
    finds a's lease, and lets the spool file go. One that arrived in between used to find the file locked,
    take b itself for another process filling it, follow a spool file nobody wrote and answer 502."""
    asyncio.run(_requests_arrive(tmp_path))


async def _requests_arrive(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    holder = FillLeases(engine, "replica-a", "http://replica-a.invalid:8000", ttl=30)
    assert holder.acquire(KEY) is None  # replica a fills the blob
    b = _manager(tmp_path / "b", engine, "replica-b")
    answers: list[object] = []

    async def ask() -> None:
        answers.append(await b.start(KEY, 1000, "/alice/m/resolve/main/w.bin"))

    # Requests keep arriving, a few event-loop turns apart, while each one's lease check runs in a thread.
    tasks = []
    for i in range(200):
        tasks.append(asyncio.create_task(ask()))
        for _ in range(i % 7):
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    followed = [a for a in answers if isinstance(a, Fill)]
    for fill in followed:  # a wrong answer: this replica following a spool file nobody fills
        if fill.task is not None:
            fill.task.cancel()
    assert not followed
    assert all(a == Holder("replica-a", "http://replica-a.invalid:8000") for a in answers)
    assert not list((tmp_path / "b" / "tmp").iterdir())  # the spool file was let go each time


def test_a_blob_stored_by_the_lease_holder_before_it_let_go_is_not_filled_again(tmp_path: Path) -> None:
    """A request looks for the blob in the store, finds nothing, and asks for the lease; meanwhile the replica
    filling it stores it and lets the lease go. The request then gets the lease, and must find the blob stored
    instead of fetching it from the upstream a second time."""
    asyncio.run(_stored_meanwhile(tmp_path))


async def _stored_meanwhile(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    b = _manager(tmp_path / "b", engine, "replica-b")
    data = b"a blob another replica fills"
    stored = Path(b.store.path(KEY))  # type: ignore[attr-defined]
    stored.parent.mkdir(parents=True)
    stored.write_bytes(data)  # what replica a stored just before it released the lease
    answer = await b.start(KEY, len(data), "/alice/m/resolve/main/w.bin")
    assert answer is None  # stored: served from the store, no fill
    assert KEY not in b.active
    other = FillLeases(engine, "replica-c", "http://replica-c.invalid:8000", ttl=30)
    assert other.acquire(KEY) is None  # the lease b took to look was let go
    assert not list((tmp_path / "b" / "tmp").iterdir())
