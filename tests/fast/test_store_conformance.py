"""The same checks against every blob store driver: the local folder and S3 (moto in server mode).

Each store is built the way the server builds it (``make_store``: the driver wrapped for error
mapping and metrics), so these checks hold for what the cache actually calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubproxy.config import load_settings
from hubproxy.store import make_store
from hubproxy.store.base import BlobStore, StoreUnavailable


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    settings = {"HUBPROXY_DATA_DIR": str(tmp_path / "data")}
    if request.param == "s3":
        name, _ = request.getfixturevalue("bucket")
        settings |= {"HUBPROXY_STORE": "s3", "HUBPROXY_S3_BUCKET": name,
                     "HUBPROXY_S3_ENDPOINT_URL": request.getfixturevalue("s3_endpoint"),
                     "HUBPROXY_S3_REGION": "us-east-1", "HUBPROXY_S3_PATH_STYLE": "true"}
    yield make_store(load_settings(environ=settings))


def _verified_file(tmp_path: Path, data: bytes) -> tuple[str, str]:
    """A spooled file and the sha256 key that names its bytes."""
    path = tmp_path / f"spool-{os.urandom(4).hex()}"
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), str(path)


async def _read(store: BlobStore, key: str, start: int, end: int, chunk: int = 1000) -> bytes | None:
    body = await store.read(key, start, end, chunk)
    if body is None:
        return None
    return b"".join([part async for part in body])


def test_reads_over_a_mib_are_exact_and_a_missing_blob_is_none(store: BlobStore, tmp_path: Path) -> None:
    """(On S3 these are the raw GETs of ``store/rawget.py``: a 206 of the exact range, or a 404.)"""
    data = os.urandom(3 * 1024 * 1024 + 7)
    key, path = _verified_file(tmp_path, data)
    assert asyncio.run(_read(store, key, 0, len(data))) is None
    store.ingest(key, path)
    assert asyncio.run(_read(store, key, 0, len(data))) == data
    assert asyncio.run(_read(store, key, 5, 2 * 1024 * 1024 + 5)) == data[5:2 * 1024 * 1024 + 5]

    async def spliceable() -> bool:
        """Whether the body offers its bytes as spans (a file, or the bucket's connection) for zero-copy sending."""
        body = await store.read(key, 0, len(data), 1 << 20)
        try:
            return getattr(body, "spans", None) is not None
        finally:
            await body.aclose()  # type: ignore[union-attr]

    assert asyncio.run(spliceable())


def test_a_blob_goes_in_is_read_by_range_and_goes_away(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(10_000)
    key, path = _verified_file(tmp_path, data)
    assert store.stat(key) is None and asyncio.run(_read(store, key, 0, 10)) is None
    store.ingest(key, path)
    assert store.stat(key) == len(data)
    assert asyncio.run(_read(store, key, 0, len(data))) == data
    assert asyncio.run(_read(store, key, 1234, 5678, chunk=333)) == data[1234:5678]
    assert asyncio.run(_read(store, key, len(data) - 1, len(data))) == data[-1:]
    assert key in set(store.list())
    store.delete(key)
    assert store.stat(key) is None and key not in set(store.list())
    store.delete(key)  # deleting what is gone is no error


def test_ingest_replaces_nothing_but_its_own_key(store: BlobStore, tmp_path: Path) -> None:
    one, two = os.urandom(3000), os.urandom(4000)
    for data in (one, two):
        store.ingest(*_verified_file(tmp_path, data))
    key_one = hashlib.sha256(one).hexdigest()
    store.ingest(*_verified_file(tmp_path, one))  # the same blob again (two fills racing): still one blob
    assert sorted(store.list()) == sorted([key_one, hashlib.sha256(two).hexdigest()])
    assert asyncio.run(_read(store, key_one, 0, len(one))) == one


def test_quarantine_takes_a_blob_out_of_service(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(2000)
    key, path = _verified_file(tmp_path, data)
    store.ingest(key, path)
    store.quarantine(key)
    assert store.stat(key) is None and key not in set(store.list())
    assert asyncio.run(_read(store, key, 0, 10)) is None


def test_only_hashes_name_blobs(store: BlobStore) -> None:
    for bad in ("../../etc/passwd", "A" * 64, "abc", "0" * 63 + "/"):
        with pytest.raises(ValueError):
            store.stat(bad)
        with pytest.raises(ValueError):
            store.delete(bad)


def test_presign_gives_the_bytes_or_nothing(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(5000)
    key, path = _verified_file(tmp_path, data)
    store.ingest(key, path)
    url = store.presign(key)
    if store.kind == "local":  # type: ignore[attr-defined]
        assert url is None  # a folder has no URL of its own: hubproxy serves its bytes
    else:
        assert url is not None
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - moto on loopback
            assert resp.read() == data


def test_an_upload_stores_exactly_the_bytes_of_its_parts(store: BlobStore) -> None:
    data = bytearray(os.urandom(6 * 1024 * 1024 + 3))
    key = hashlib.sha256(data).hexdigest()
    upload = store.start_upload(key, 64 * 1024 * 1024)  # the size it announces: large enough to go in parts
    if store.kind == "local":  # type: ignore[attr-defined]
        assert upload is None
        return
    assert upload is not None
    view, edge = memoryview(data), 5 * 1024 * 1024
    upload.put_part(2, view[edge:])  # parts in any order, each a view of the caller's buffer
    upload.put_part(1, view[:edge])
    assert store.stat(key) is None  # nothing stored before ``complete``
    sent = bytes(data)
    data[:3] = b"xyz"  # the caller's buffer is its own again once a part is sent: the part keeps its bytes
    upload.complete()
    assert asyncio.run(_read(store, key, 0, len(sent), 1 << 20)) == sent


def test_uploads_left_unfinished_are_aborted_once_old_enough_unless_kept(store: BlobStore) -> None:
    old, kept = hashlib.sha256(b"old").hexdigest(), hashlib.sha256(b"kept").hexdigest()
    size = 64 * 1024 * 1024
    uploads = [store.start_upload(old, size), store.start_upload(kept, size)]
    if store.kind == "local":  # type: ignore[attr-defined]
        assert uploads == [None, None]  # a fill's unfinished bytes live in the spool, not in the store
        assert store.abort_abandoned_uploads(0) == 0
        return
    client, bucket = store.client, store.bucket  # type: ignore[attr-defined]
    # Uploads that are not this store's blobs: another application's, and an odd name under the prefix.
    client.create_multipart_upload(Bucket=bucket, Key=f"other-app/blobs/{old[:2]}/{old}")
    client.create_multipart_upload(Bucket=bucket, Key=f"hubproxy/blobs/{old[:2]}/{old}.tmp")

    def unfinished() -> set[str]:
        return {u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}

    every = unfinished()
    assert len(every) == 4
    assert store.abort_abandoned_uploads(1) == 0  # none seen for a second yet
    time.sleep(1.1)
    assert store.abort_abandoned_uploads(3600) == 0  # none seen for an hour
    assert store.abort_abandoned_uploads(1, keep={kept}) == 1
    assert unfinished() == every - {f"hubproxy/blobs/{old[:2]}/{old}"}
    uploads[1].abort()  # type: ignore[union-attr]
    assert store.abort_abandoned_uploads(0) == 0


def test_ping_and_failures_are_store_unavailable(store: BlobStore, tmp_path: Path) -> None:
    store.ping()
    broken = _broken(store, tmp_path)
    with pytest.raises(StoreUnavailable):
        broken.ping()
    with pytest.raises(StoreUnavailable):
        broken.ingest(*_verified_file(tmp_path, b"x" * 100))


def _broken(store: BlobStore, tmp_path: Path) -> BlobStore:
    """The same kind of store, made unusable: no blob folder, or a bucket that does not exist."""
    if store.kind == "local":  # type: ignore[attr-defined]
        root = tmp_path / "broken"
        broken = make_store(load_settings(environ={"HUBPROXY_DATA_DIR": str(root)}))
        (root / "blobs").rmdir()
        (root / "blobs").write_bytes(b"")  # a file where the blob folder was (even root cannot write into it)
        return broken
    settings = load_settings(environ={
        "HUBPROXY_DATA_DIR": str(tmp_path / "data"), "HUBPROXY_STORE": "s3", "HUBPROXY_S3_BUCKET": "no-such-bucket",
        "HUBPROXY_S3_ENDPOINT_URL": store.client.meta.endpoint_url,  # type: ignore[attr-defined]
        "HUBPROXY_S3_REGION": "us-east-1", "HUBPROXY_S3_PATH_STYLE": "true"})
    return make_store(settings)
