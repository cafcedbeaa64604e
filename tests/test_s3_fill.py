"""Filling into the S3 store: parts are uploaded while the blob fills, completed only once it is verified."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from huggingface_hub import hf_hub_download

from tests.fakehub import FakeHub
from tests.helpers import get_cut_before_the_end, request, s3_settings, wait_until

MIB = 1024 * 1024


def _s3_settings(s3_endpoint: str, name: str) -> dict[str, str]:
    return s3_settings(s3_endpoint, name, fill_part_bytes=str(4 * MIB))


def _wait_object(client, name: str, key: str, timeout: float = 20) -> dict | None:  # noqa: ANN001
    """The object's HEAD once it exists (None if it does not within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.head_object(Bucket=name, Key=key)
        except client.exceptions.ClientError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)


def test_a_large_blob_is_uploaded_in_parts_while_it_fills(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                          s3_endpoint: str, bucket) -> None:  # noqa: ANN001
    name, client = bucket
    proxy = make_proxy(**_s3_settings(s3_endpoint, name), fill_connections="1")  # one stream: a fill of ~2 s
    data = os.urandom(40 * MIB + 77)
    sha = hashlib.sha256(data).hexdigest()
    key = f"hubproxy/blobs/{sha[:2]}/{sha}"
    fakehub.add_commit("model", "alice/s3big", {"w.safetensors": data})
    fakehub.faults.trickle[sha] = (1024 * 1024, 0.05)
    with ThreadPoolExecutor(1) as pool:
        download = pool.submit(hf_hub_download, "alice/s3big", "w.safetensors", endpoint=proxy.url,
                               cache_dir=tmp_path)
        parts_before_the_end = 0
        while not download.done() and not parts_before_the_end:
            for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                listed = client.list_parts(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
                if listed.get("Parts") and _wait_object(client, name, key, timeout=0) is None:
                    parts_before_the_end = len(listed["Parts"])  # uploaded while the blob was still filling
            time.sleep(0.05)
        assert Path(download.result()).read_bytes() == data
    assert parts_before_the_end >= 1
    head = _wait_object(client, name, key)
    assert head is not None and head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three 16 MiB parts
    assert client.get_object(Bucket=name, Key=key)["Body"].read() == data
    assert not client.list_multipart_uploads(Bucket=name).get("Uploads")
    # Served back from the bucket (one GET, read ahead of the client).
    status, _, body = request("GET", proxy.url + "/alice/s3big/resolve/main/w.safetensors",
                              {"Range": f"bytes=1000-{len(data) - 1000}"})
    assert status == 206 and body == data[1000:len(data) - 999]
    again = hf_hub_download("alice/s3big", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path / "again")
    assert Path(again).read_bytes() == data


def test_a_client_does_not_wait_for_the_bucket_to_start_the_upload(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                                   tmp_path: Path, s3_endpoint: str, bucket) -> None:
    """The bucket holds back its answer to "start a multipart upload": the cold download completes meanwhile (the
    upload starts beside the fill, not before it); once the bucket answers, the parts go up and the blob is stored."""
    from tests.relays import S3FaultRelay

    name, client = bucket
    relay = S3FaultRelay(s3_endpoint)
    relay.delay, relay.delayed = 120.0, lambda method, path: method == "POST" and path.endswith("?uploads")
    try:
        proxy = make_proxy(**_s3_settings(relay.url, name))
        data = os.urandom(40 * MIB + 5)
        sha = hashlib.sha256(data).hexdigest()
        fakehub.add_commit("model", "alice/s3held", {"w.safetensors": data})
        with ThreadPoolExecutor(1) as pool:
            download = pool.submit(hf_hub_download, "alice/s3held", "w.safetensors", endpoint=proxy.url,
                                   cache_dir=tmp_path)
            done = wait_until(download.done, 30)
            starts = [path for method, path, _ in relay.seen if method == "POST" and path.endswith("?uploads")]
            relay.release.set()  # the bucket answers now
            assert done, "the client's download waited for the bucket"
            assert Path(download.result()).read_bytes() == data
        assert starts, "the upload was asked for while the download ran"
        head = _wait_object(client, name, f"hubproxy/blobs/{sha[:2]}/{sha}")
        assert head is not None and head["ETag"].strip('"').endswith("-3")  # uploaded in parts after all
        assert client.get_object(Bucket=name, Key=f"hubproxy/blobs/{sha[:2]}/{sha}")["Body"].read() == data
        assert not client.list_multipart_uploads(Bucket=name).get("Uploads")
    finally:
        relay.release.set()
        relay.stop()


def test_a_blob_that_fails_verification_is_never_in_the_bucket(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                               s3_endpoint: str, bucket) -> None:  # noqa: ANN001
    name, client = bucket
    proxy = make_proxy(**_s3_settings(s3_endpoint, name))
    data = os.urandom(36 * MIB)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/s3bad", {"w.safetensors": data})
    fakehub.faults.corrupt_next[sha] = 1  # the part holding the middle byte comes wrong once
    get_cut_before_the_end(proxy.port, "/alice/s3bad/resolve/main/w.safetensors", len(data))
    deadline = time.monotonic() + 10
    while client.list_multipart_uploads(Bucket=name).get("Uploads") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not client.list_multipart_uploads(Bucket=name).get("Uploads")  # aborted: no parts kept
    assert not client.list_objects_v2(Bucket=name).get("Contents")
    status, _, body = request("GET", proxy.url + "/alice/s3bad/resolve/main/w.safetensors")
    assert status == 200 and body == data
    assert _wait_object(client, name, f"hubproxy/blobs/{sha[:2]}/{sha}") is not None


def test_an_upload_left_by_a_killed_filler_is_aborted_and_a_live_fill_elsewhere_is_not(  # noqa: ANN201
        make_proxy, fakehub: FakeHub, tmp_path: Path, s3_endpoint: str, bucket, pg_url: str):  # noqa: ANN001
    """Replica ``a`` is killed mid-fill: its multipart upload stays in the bucket. Replica ``c`` (which
    aborts uploads unfinished for a second) aborts it once ``a``'s lease lapses, while replica ``b``'s
    slow fill of another blob, leased and unfinished for longer than that, goes on and completes."""
    name, client = bucket
    common = {**_s3_settings(s3_endpoint, name), "database_url": pg_url, "fill_connections": "1",
              "fill_lease_seconds": "2"}
    a = make_proxy(data_dir=tmp_path / "a", **common)
    b = make_proxy(data_dir=tmp_path / "b", **common)
    c = make_proxy(data_dir=tmp_path / "c", **common, s3_abandoned_upload_seconds="1", maintenance_interval="0.2")
    killed, live = os.urandom(40 * MIB), os.urandom(40 * MIB)
    killed_sha, live_sha = hashlib.sha256(killed).hexdigest(), hashlib.sha256(live).hexdigest()
    fakehub.add_commit("model", "alice/s3killed", {"w.safetensors": killed})
    fakehub.add_commit("model", "alice/s3live", {"w.safetensors": live})
    fakehub.faults.trickle[killed_sha] = (1024 * 1024, 0.2)
    fakehub.faults.trickle[live_sha] = (1024 * 1024, 0.25)  # about ten seconds to fill

    def unfinished() -> set[str]:
        return {u["Key"].rsplit("/", 1)[-1] for u in client.list_multipart_uploads(Bucket=name).get("Uploads", [])}

    with ThreadPoolExecutor(2) as pool:
        pool.submit(request, "GET", a.url + "/alice/s3killed/resolve/main/w.safetensors", timeout=60)
        assert wait_until(lambda: killed_sha in unfinished(), timeout=20)
        time.sleep(3)  # c looks every second and has seen a's upload for over a second: a's lease keeps it
        assert killed_sha in unfinished()
        a.kill()
        downloading = pool.submit(hf_hub_download, "alice/s3live", "w.safetensors", endpoint=b.url,
                                  cache_dir=tmp_path / "live")
        assert wait_until(lambda: live_sha in unfinished(), timeout=20)
        assert wait_until(lambda: killed_sha not in unfinished(), timeout=15)  # a's lease lapsed: aborted
        time.sleep(2.5)  # c looks twice more at b's upload, unfinished for over a second: b's lease keeps it
        assert not downloading.done() and live_sha in unfinished()
        assert Path(downloading.result()).read_bytes() == live
    assert _wait_object(client, name, f"hubproxy/blobs/{live_sha[:2]}/{live_sha}") is not None
    assert not unfinished()
    assert _wait_object(client, name, f"hubproxy/blobs/{killed_sha[:2]}/{killed_sha}", timeout=0) is None
    assert "aborted 1 uploads left unfinished" in c.log()
    fakehub.faults.trickle.pop(killed_sha)
    again = hf_hub_download("alice/s3killed", "w.safetensors", endpoint=c.url, cache_dir=tmp_path / "again")
    assert Path(again).read_bytes() == killed
