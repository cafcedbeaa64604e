"""A fill's helpers beside its download: the page warmer (pages made ahead of the writers, within a window),
the prefix hasher, the descriptors both use while a fill ends or is cancelled, and the upload fed as it fills."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import mmap
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hubproxy.cache import filler
from hubproxy.cache import spool as spool_module
from hubproxy.cache.fill import Fill
from hubproxy.cache.fillbody import FillBody
from hubproxy.cache.filler import WARM_STEP_BYTES, PrefixHasher, warm_pages
from hubproxy.cache.hashfeed import HashFeed
from hubproxy.cache.spool import Spool, SpoolFile, filesystem_type
from hubproxy.cache.upload import UPLOAD_NICE, feed_upload
from hubproxy.descriptors import open_for_reading
from hubproxy.libc import LIBC
from hubproxy.store.local import LocalBlobStore

MIB = 1024 * 1024
KEY = "cd" * 32
PAGE = os.sysconf("SC_PAGE_SIZE")


def resident(path: str, start: int, end: int) -> float:
    """The share of the file's pages in ``[start, end)`` that are in the page cache (``mincore``)."""
    assert LIBC is not None
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, end - start, offset=start) as m:
            address = ctypes.addressof(ctypes.c_char.from_buffer(m))
            pages = (end - start + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            assert LIBC.mincore(ctypes.c_void_p(address), ctypes.c_size_t(end - start), vec) == 0
            share = sum(v & 1 for v in vec) / pages
            del address
            return share
    finally:
        os.close(fd)


#: Share of a warmed window that must be in the page cache. Not all of it: pages made ahead are clean and not yet
#: used, the first a machine's proactive reclaim drops (ours runs DAMON paging out cold unmapped page cache), and
#: readahead gives up a page it cannot allocate at once. 3-8% of a window were gone in about one run in twelve.
MADE = 0.75


async def until_resident(path: str, end: int) -> None:
    """Wait (up to 20 s: a loaded machine) until the file's pages up to ``end`` are in the page cache (``MADE``)."""
    for _ in range(2000):
        if resident(path, 0, end) >= MADE:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {resident(path, 0, end):.0%} of the first {end} bytes were made")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def descriptors_back_to(before: int) -> None:
    """Wait (up to 5 s) until the process holds ``before`` descriptors again; fail if it does not."""
    for _ in range(500):
        if open_descriptors() == before:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{open_descriptors() - before} descriptors left open")


def _reserved_spool_file(folder: Path, size: int) -> SpoolFile:
    """A new spool file with ``size`` bytes allocated; skips the test where the filesystem cannot allocate (it gets
    no warming)."""
    part = Spool(folder).begin(KEY)
    assert part is not None
    if not part.reserve(size):
        part.finish()
        pytest.skip("the tests' temporary folder cannot allocate a file's blocks ahead (no fallocate)")
    return part


def test_pages_are_made_ahead_of_the_prefix_and_no_further_than_the_lead(tmp_path: Path) -> None:
    size, lead = 96 * MIB, 16 * MIB
    part = _reserved_spool_file(tmp_path, size)
    path = part.path

    async def run() -> None:
        fill = Fill(KEY, size, path, "alice/x/resolve/main/f", store=None)  # type: ignore[arg-type]
        warming = asyncio.create_task(warm_pages(fill, path, lead))
        await until_resident(path, lead)
        await asyncio.sleep(0.05)
        beyond = resident(path, lead + WARM_STEP_BYTES, size)
        assert beyond == 0.0, f"{beyond:.0%} made past the window"  # caught up with the window: waiting
        fill.written = 40 * MIB  # the prefix moved: the window follows it
        fill.notify()
        await until_resident(path, 56 * MIB)
        beyond = resident(path, 56 * MIB + WARM_STEP_BYTES, size)
        assert beyond == 0.0, f"{beyond:.0%} made past the window"
        fill.written = size
        fill.notify()
        await asyncio.wait_for(warming, 5)  # nothing left to warm: it ends on its own

    try:
        asyncio.run(run())
        with open(path, "rb") as f:
            assert f.read(MIB) == bytes(MIB)  # warmed pages of reserved bytes read as the zeros they are
    finally:
        part.finish()


def test_the_warmer_waits_while_every_writer_skips_the_page_cache(tmp_path: Path) -> None:
    """On a spool whose lanes write past the page cache, pages made ahead would only be dropped by their direct
    writes: pages are made only for a part written through the page cache (received on the event loop)."""
    size, lead = 64 * MIB, 16 * MIB
    part = _reserved_spool_file(tmp_path, size)
    path = part.path

    async def run() -> None:
        fill = Fill(KEY, size, path, "alice/x/resolve/main/f", store=None)  # type: ignore[arg-type]
        warming = asyncio.create_task(warm_pages(fill, path, lead, unless_unpaged=True))
        fill.written = 8 * MIB  # lanes writing past the page cache move the prefix
        fill.notify()
        await asyncio.sleep(0.3)
        assert resident(path, 0, size) == 0.0, "pages were made for writers that skip the page cache"
        fill.paged_end = 20 * MIB  # a part up to there comes through the page cache: its pages are made ahead
        fill.notify()
        for _ in range(2000):
            if resident(path, 8 * MIB, 20 * MIB) >= MADE:
                break
            await asyncio.sleep(0.01)
        assert resident(path, 8 * MIB, 20 * MIB) >= MADE, "no pages were made ahead of a part written paged"
        await asyncio.sleep(0.1)
        assert resident(path, 0, 8 * MIB) == 0.0, "pages behind the prefix were made"
        beyond = resident(path, 20 * MIB + WARM_STEP_BYTES, size)
        assert beyond == 0.0, f"{beyond:.0%} made past the part written through the page cache"
        warming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warming

    try:
        asyncio.run(run())
    finally:
        part.finish()


def test_a_cancelled_warmer_leaves_no_descriptor_open(tmp_path: Path) -> None:
    size = 64 * MIB
    spool = Spool(tmp_path)
    part = spool.begin(KEY)
    assert part is not None
    part.reserve(size)

    async def run() -> None:
        before = open_descriptors()
        fill = Fill(KEY, size, part.path, "alice/x/resolve/main/f", store=None)  # type: ignore[arg-type]
        warming = asyncio.create_task(warm_pages(fill, part.path, size))
        await asyncio.sleep(0.005)  # a call is most likely in flight
        warming.cancel()
        await asyncio.gather(warming, return_exceptions=True)
        await descriptors_back_to(before)  # the call in flight returns and closes what it opened

    try:
        asyncio.run(run())
    finally:
        part.finish()


def test_a_warmer_whose_file_is_gone_ends_quietly(tmp_path: Path) -> None:
    async def run() -> None:
        fill = Fill(KEY, 10 * MIB, str(tmp_path / "gone.part"), "alice/x/resolve/main/f", store=None)  # type: ignore[arg-type]
        await asyncio.wait_for(warm_pages(fill, str(tmp_path / "gone.part"), MIB), 5)

    before = open_descriptors()
    asyncio.run(run())
    assert open_descriptors() == before


def test_a_cancelled_hasher_closes_its_descriptor_only_once_its_call_left(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A fill cancelled while its hash runs in a thread: the thread still reads the descriptor, so it must stay
    open (its number not free for another file or connection) until the call is done, then be closed."""
    path = tmp_path / "blob.part"
    path.write_bytes(os.urandom(MIB))
    entered, release = threading.Event(), threading.Event()
    real_hash_range = filler._hash_range

    def held_hash_range(*args: object) -> int:
        entered.set()
        release.wait(5)
        return real_hash_range(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(filler, "_hash_range", held_hash_range)

    async def run() -> None:
        before = open_descriptors()
        fill = Fill(KEY, MIB, str(path), "alice/x/resolve/main/f", store=None)  # type: ignore[arg-type]
        fill.written = MIB
        hashing = asyncio.create_task(PrefixHasher(fill, str(path), HashFeed()).run())
        while not entered.is_set():
            await asyncio.sleep(0.005)
        hashing.cancel()
        await asyncio.gather(hashing, return_exceptions=True)
        await asyncio.sleep(0.05)
        assert open_descriptors() == before + 1  # the call is still inside: its descriptor stays open
        release.set()
        await descriptors_back_to(before)  # the call in flight returns and closes what it opened

    asyncio.run(run())


def test_a_cancelled_open_leaves_no_descriptor_behind(tmp_path: Path) -> None:
    """Both helpers open the spool file in a thread; a fill cancelled meanwhile must not leave that descriptor."""
    path = tmp_path / "blob.part"
    path.write_bytes(b"x")

    async def run() -> None:
        before = open_descriptors()
        for _ in range(20):  # cancelled at once: the thread's open may still be running, or done
            opening = asyncio.create_task(open_for_reading(str(path)))
            await asyncio.sleep(0)
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
        await descriptors_back_to(before)

    asyncio.run(run())


def test_a_request_cancelled_while_its_blob_file_opens_leaves_no_descriptor(tmp_path: Path) -> None:
    """A client gone while the stored blob or the fill's spool file is being opened (a slow open on NFS; here a
    FIFO, whose open waits in the worker thread until a writer comes): once the open completes, its descriptor
    is closed, not left to nobody."""
    store = LocalBlobStore(tmp_path / "store")
    stored = store.path(KEY)
    os.makedirs(os.path.dirname(stored))
    os.mkfifo(stored)
    spooled = str(tmp_path / "blob.part")
    os.mkfifo(spooled)

    async def run() -> None:
        fill = Fill(KEY, 10, spooled, "/repo/resolve/main/file", store)  # type: ignore[arg-type]
        before = open_descriptors()
        for opening, path in ((store.read(KEY, 0, 10, 4), stored), (FillBody.open(fill, 0, 10, 4), spooled)):
            task = asyncio.create_task(opening)
            await asyncio.sleep(0.05)  # the worker thread is inside open, waiting for a writer
            assert not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # a writer comes: the open completes
            os.close(writer)
        await descriptors_back_to(before)

    asyncio.run(run())


def test_the_spool_knows_its_filesystem_and_a_network_one_is_not_warmed(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    probe = subprocess.run(["stat", "-f", "-c", "%t", str(tmp_path)], capture_output=True, text=True, check=True)
    assert filesystem_type(tmp_path) == int(probe.stdout.strip(), 16)  # the same magic number coreutils reads
    assert Spool(tmp_path).network_filesystem is False
    monkeypatch.setattr(spool_module, "filesystem_type", lambda _path: 0x6969)  # NFS
    assert Spool(tmp_path).network_filesystem is True


@pytest.mark.parametrize("network", [False, True], ids=["local", "nfs"])
def test_a_fill_warms_its_spool_only_on_a_local_filesystem(make_app, fakehub, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                                           network: bool) -> None:
    """The filler asks the spool where it is: on a network filesystem no warmer runs (it would read from the
    server), on a local one it does; the bytes are exact either way."""
    warmed: list[str] = []
    real_warm = filler.warm_pages

    async def recorded(fill: Fill, path: str, lead: int, unless_unpaged: bool = False) -> None:
        warmed.append(path)
        await real_warm(fill, path, lead, unless_unpaged)

    monkeypatch.setattr(filler, "warm_pages", recorded)
    if network:
        monkeypatch.setattr(spool_module, "filesystem_type", lambda _path: 0x6969)  # NFS
    app = make_app()
    repo = fakehub.repos[("model", "alice/files")]
    data = repo.commits[repo.branches["main"]].files["weights.bin"].blob.data
    status, _, body = app.request("GET", "/alice/files/resolve/main/weights.bin")
    assert status == 200 and body == data
    assert len(warmed) == (0 if network else 1)


class _FolderUpload:
    """An upload into a folder of part files (``store.base.Upload``), noting each part's thread priority."""

    part_bytes = 3 * MIB

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.priorities: dict[int, int] = {}

    def put_part(self, number: int, data: memoryview) -> None:
        self.priorities[number] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        (self.folder / f"{number:05d}").write_bytes(data)

    def complete(self) -> None:
        pass

    def abort(self) -> None:
        pass


@pytest.mark.parametrize("direct", [False, True], ids=["paged", "direct"])
def test_parts_go_up_as_the_prefix_grows_in_threads_of_the_lowest_priority(tmp_path: Path, direct: bool) -> None:
    data = os.urandom(10 * MIB + 5)
    spool_path = tmp_path / "spool"
    spool_path.write_bytes(b"\0" * len(data))
    parts = tmp_path / "parts"
    parts.mkdir()
    upload = _FolderUpload(parts)

    async def run() -> None:
        fill = Fill(KEY, len(data), str(spool_path), "", LocalBlobStore(tmp_path / "store"))
        # (``direct``: parts read past the page cache, where the bytes just written are still only in it)
        feeding = asyncio.create_task(feed_upload(fill, upload, str(spool_path), direct))
        with open(spool_path, "r+b") as f:
            for end in (4 * MIB, 7 * MIB, len(data)):
                f.seek(fill.written)
                f.write(data[fill.written:end])
                f.flush()
                fill.written = end
                fill.notify()
                await asyncio.sleep(0.2)
                assert len(list(parts.iterdir())) == end // upload.part_bytes + (end == len(data))
        await asyncio.wait_for(feeding, 10)

    before = os.getpriority(os.PRIO_PROCESS, 0)
    asyncio.run(run())
    assert b"".join(p.read_bytes() for p in sorted(parts.iterdir())) == data
    assert set(upload.priorities.values()) == {UPLOAD_NICE}  # what a client waits for goes first
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the rest of the process keeps its own


def test_a_followed_fill_has_its_direct_written_prefix_read_into_the_page_cache(tmp_path: Path) -> None:
    """Followers in other processes send a filling file with ``sendfile``: bytes written past the page cache are
    asked into it when the prefix is published to them (and only then), so their reads do not wait on the disk."""
    spool = Spool(tmp_path, direct_writes=True)
    part = spool.begin(KEY)
    assert part is not None
    try:
        if not part.direct:
            pytest.skip("the tests' temporary folder takes no direct I/O")
        data = os.urandom(8 * MIB)
        buf = mmap.mmap(-1, len(data))  # page-aligned, as the lanes' buffers
        buf[:] = data
        part.write_unpaged(memoryview(buf)[:4 * MIB], 0)
        part.publish(4 * MIB)  # nobody follows: nothing asked into the page cache
        time.sleep(0.2)
        assert resident(part.path, 0, 4 * MIB) == 0
        part.write_unpaged(memoryview(buf)[4 * MIB:], 4 * MIB)
        part.publish(8 * MIB, followed=True)  # a follower came: the whole prefix, not just what is new
        asyncio.run(until_resident(part.path, 8 * MIB))
        with open(part.path, "rb") as f:
            assert f.read() == data
        assert spool.progress(KEY) == (8 * MIB, True)  # and published, as before
    finally:
        part.finish()
