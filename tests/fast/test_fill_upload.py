"""The store's upload of a filling blob (``cache/upload.py``): started beside the fill, never kept unfinished."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from hubproxy.cache.fill import Fill
from hubproxy.cache.upload import FillUpload
from hubproxy.store.local import LocalBlobStore

KEY = "ab" * 32


class _Upload:
    """An upload that keeps nothing and notes what was done to it (``store.base.Upload``)."""

    part_bytes = 1024

    def __init__(self) -> None:
        self.parts: list[int] = []
        self.sent: dict[int, bytes] = {}
        self.aborted = False

    def put_part(self, number: int, data: memoryview) -> None:
        self.parts.append(number)
        self.sent[number] = bytes(data)

    def complete(self) -> None:
        raise AssertionError("a FillUpload leaves completing to the fill")

    def abort(self) -> None:
        self.aborted = True


class _HeldStore(LocalBlobStore):
    """A store whose ``start_upload`` waits for ``answer`` (a bucket slow to start an upload)."""

    def __init__(self, root: Path, fail: bool = False) -> None:
        super().__init__(root)
        self.answer = threading.Event()
        self.asked = threading.Event()
        self.fail = fail
        self.upload = _Upload()

    def start_upload(self, key: str, size: int) -> _Upload:
        self.asked.set()
        self.answer.wait(10)
        if self.fail:
            raise OSError("the bucket refused")
        return self.upload


def test_an_upload_the_store_starts_after_the_fill_ended_is_aborted(tmp_path: Path) -> None:
    store = _HeldStore(tmp_path / "store")

    async def run() -> None:
        fill = Fill(KEY, 4096, str(tmp_path / "spool"), "", store)
        uploading = FillUpload(fill, store, str(tmp_path / "spool"))
        assert await asyncio.to_thread(store.asked.wait, 5)
        # The fill went on meanwhile, and failed: it abandons the upload while the bucket is still starting it.
        abandoning = asyncio.create_task(uploading.abandon())
        await asyncio.sleep(0.1)
        assert not abandoning.done()  # waits to learn of the upload the bucket is making
        store.answer.set()
        await asyncio.wait_for(abandoning, 5)

    asyncio.run(run())
    assert store.upload.aborted and store.upload.parts == []


def test_parts_go_up_once_the_store_has_started_and_a_failed_start_stores_the_blob_whole(tmp_path: Path) -> None:
    blob = os.urandom(3000)
    (tmp_path / "spool").write_bytes(blob)

    async def run(store: _HeldStore) -> object:
        fill = Fill(KEY, 3000, str(tmp_path / "spool"), "", store)
        uploading = FillUpload(fill, store, str(tmp_path / "spool"))
        fill.written = fill.size  # the whole blob is written (and verified) before the store answers
        fill.notify()
        store.answer.set()
        return await asyncio.wait_for(uploading.uploaded(), 5)

    started = _HeldStore(tmp_path / "a")
    assert asyncio.run(run(started)) is started.upload
    assert sorted(started.upload.parts) == [1, 2, 3] and not started.upload.aborted
    assert b"".join(started.upload.sent[n] for n in (1, 2, 3)) == blob  # each part's own bytes of the spool file
    refused = _HeldStore(tmp_path / "b", fail=True)
    assert asyncio.run(run(refused)) is None
