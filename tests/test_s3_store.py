"""The S3 blob store against moto in server mode (a real HTTP endpoint), streamed and redirected."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from huggingface_hub import hf_hub_download, snapshot_download

from tests.fakehub import FakeHub
from tests.helpers import free_port, request, s3_settings, scrape, value, wait_until


def _objects(client, name: str) -> list[str]:  # noqa: ANN001
    return [o["Key"] for o in client.list_objects_v2(Bucket=name).get("Contents", [])]


def test_s3_streamed(make_proxy, fakehub: FakeHub, s3_endpoint: str, bucket, tmp_path: Path) -> None:  # noqa: ANN001
    name, client = bucket
    proxy = make_proxy(**s3_settings(s3_endpoint, name))
    data = os.urandom(20 * 1024 * 1024 + 3)  # several multipart parts
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/s3-model", {"w.safetensors": data, "config.json": b'{"a": 1}'})
    local = hf_hub_download("alice/s3-model", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path / "a")
    assert Path(local).read_bytes() == data
    key = f"hubproxy/blobs/{sha[:2]}/{sha}"
    deadline = time.monotonic() + 20
    while key not in _objects(client, name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get_object(Bucket=name, Key=key)["Body"].read() == data
    assert not (proxy.data_dir / "blobs").exists() or not any((proxy.data_dir / "blobs").rglob("*"))
    # The spool file goes just after the upload completes, which is when the object appears.
    assert wait_until(lambda: list((proxy.data_dir / "tmp").iterdir()) == [])
    fakehub.reset_counts()
    spliced = value(scrape(proxy.url), "hubproxy_zero_copy_bytes_total")
    local = hf_hub_download("alice/s3-model", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path / "b")
    assert Path(local).read_bytes() == data
    status, h, body = request("GET", proxy.url + "/alice/s3-model/resolve/main/w.safetensors",
                              {"Range": "bytes=1000-2000000"})
    assert status == 206 and body == data[1000:2000001]
    assert fakehub.count(contains=sha) == 0  # served from the bucket, not the upstream
    # Both answers went from the bucket's socket to the client's by splice (store/rawget.py), minus the
    # bytes that arrived with each answer's headers.
    moved = value(scrape(proxy.url), "hubproxy_zero_copy_bytes_total") - spliced
    assert len(data) + 2_000_000 - 2 * 65536 < moved <= len(data) + 2_000_000
    # A spliced answer leaves the client's connection ready for the next request.
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.connect()
    sock = conn.sock
    try:
        for first, last in ((5, 3_000_004), (0, len(data) - 1), (len(data) - 1_500_000, len(data) - 1)):
            conn.request("GET", "/alice/s3-model/resolve/main/w.safetensors", headers={"Range": f"bytes={first}-{last}"})
            resp = conn.getresponse()
            assert resp.status == 206 and resp.read() == data[first:last + 1]
            assert conn.sock is sock and not resp.will_close  # the same connection throughout
    finally:
        conn.close()
    # Several clients at once, each answer spliced from its own GET.
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: request("GET", proxy.url + "/alice/s3-model/resolve/main/w.safetensors"),
                                range(6)))
    assert all(status == 200 and hashlib.sha256(body).hexdigest() == sha for status, _, body in answers)


def test_a_hot_read_the_bucket_cuts_never_completes(make_proxy, fakehub: FakeHub, s3_endpoint: str,  # noqa: ANN001
                                                    bucket) -> None:
    """A stored object's GET cut by the bucket mid-body: the client's answer is cut too, never completed."""
    from tests.relays import S3FaultRelay

    name, client = bucket
    relay = S3FaultRelay(s3_endpoint)
    try:
        proxy = make_proxy(**s3_settings(relay.url, name))
        data = os.urandom(6 * 1024 * 1024)
        sha = hashlib.sha256(data).hexdigest()
        fakehub.add_commit("model", "alice/s3-cut", {"w.safetensors": data})
        url = proxy.url + "/alice/s3-cut/resolve/main/w.safetensors"
        assert request("GET", url)[2] == data
        assert wait_until(lambda: f"hubproxy/blobs/{sha[:2]}/{sha}" in _objects(client, name), 20)
        relay.cut_gets = 2 * 1024 * 1024
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        conn.request("GET", "/alice/s3-cut/resolve/main/w.safetensors")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Length") == str(len(data))
        with pytest.raises(http.client.IncompleteRead) as cut:
            resp.read()
        assert len(cut.value.partial) <= 2 * 1024 * 1024
        conn.close()
        # The cut one was the raw GET of a presigned URL (store/rawget.py), not boto3's.
        gets = [path for method, path, _ in relay.seen if method == "GET" and "/blobs/" in path]
        assert gets and "X-Amz-Signature=" in gets[-1]
        relay.cut_gets = None
        spliced = value(scrape(proxy.url), "hubproxy_zero_copy_bytes_total")
        status, _, body = request("GET", url)
        assert status == 200 and body == data
        assert value(scrape(proxy.url), "hubproxy_zero_copy_bytes_total") - spliced > len(data) - 65536
    finally:
        relay.stop()


def test_uploads_carry_a_crc32_and_are_not_signed_twice(make_proxy, fakehub: FakeHub, s3_endpoint: str,  # noqa: ANN001
                                                        bucket) -> None:
    """Every upload (parts while filling, a small blob's PUT) carries a CRC32 of its body for the server to
    check, and no sha256 of it: over plain http botocore would otherwise hash every byte a second time."""
    from tests.relays import S3FaultRelay

    name, client = bucket
    relay = S3FaultRelay(s3_endpoint)
    try:
        proxy = make_proxy(**s3_settings(relay.url, name))
        big, small = os.urandom(33 * 1024 * 1024), os.urandom(100_000)
        fakehub.add_commit("model", "alice/s3-crc", {"big.safetensors": big, "small.safetensors": small})
        for path, data in (("big.safetensors", big), ("small.safetensors", small)):
            assert request("GET", f"{proxy.url}/alice/s3-crc/resolve/main/{path}")[2] == data
        keys = [f"hubproxy/blobs/{h[:2]}/{h}" for h in (hashlib.sha256(big).hexdigest(),
                                                        hashlib.sha256(small).hexdigest())]
        assert wait_until(lambda: all(k in _objects(client, name) for k in keys), 20)
        uploads = [(path, headers) for method, path, headers in relay.seen
                   if method == "PUT" and int(headers.get("content-length") or 0) > 0]
        assert sum("partNumber=" in path for path, _ in uploads) == 3 and len(uploads) == 4
        for _, headers in uploads:
            assert headers.get("x-amz-checksum-crc32") and headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert client.get_object(Bucket=name, Key=keys[0])["Body"].read() == big
    finally:
        relay.stop()


def test_s3_redirect(make_proxy, fakehub: FakeHub, s3_endpoint: str, bucket, tmp_path: Path) -> None:  # noqa: ANN001
    name, client = bucket
    proxy = make_proxy(**s3_settings(s3_endpoint, name, s3_redirect="true"))
    repo = fakehub.repos[("model", "alice/tiny-gpt2-sharded")]
    files = {p: f.blob.data for p, f in repo.commits[repo.branches["main"]].files.items()}
    first = Path(snapshot_download("alice/tiny-gpt2-sharded", endpoint=proxy.url, cache_dir=tmp_path / "a"))
    assert {str(p.relative_to(first)): p.read_bytes() for p in first.rglob("*") if p.is_file()} == files
    shard = next(p for p in files if p.endswith(".safetensors"))
    sha = hashlib.sha256(files[shard]).hexdigest()
    deadline = time.monotonic() + 20
    while f"hubproxy/blobs/{sha[:2]}/{sha}" not in _objects(client, name) and time.monotonic() < deadline:
        time.sleep(0.1)
    status, h, _ = request("HEAD", f"{proxy.url}/alice/tiny-gpt2-sharded/resolve/main/{shard}")
    assert status == 302 and h["location"].startswith(s3_endpoint)
    assert h["x-linked-etag"] == f'"{sha}"' and h["x-linked-size"] == str(len(files[shard])) and h["x-repo-commit"]
    fakehub.reset_counts()
    again = Path(snapshot_download("alice/tiny-gpt2-sharded", endpoint=proxy.url, cache_dir=tmp_path / "b"))
    assert {str(p.relative_to(again)): p.read_bytes() for p in again.rglob("*") if p.is_file()} == files
    assert fakehub.count(contains=sha) == 0  # the client fetched the shard from S3 itself


def test_s3_corrupt_upstream_uploads_nothing(make_proxy, fakehub: FakeHub, s3_endpoint: str, bucket) -> None:  # noqa: ANN001
    name, client = bucket
    proxy = make_proxy(**s3_settings(s3_endpoint, name))
    data = os.urandom(9 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/s3-bad", {"w.safetensors": data})
    fakehub.faults.corrupt.add(sha)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.request("GET", "/alice/s3-bad/resolve/main/w.safetensors")
    with pytest.raises(http.client.IncompleteRead):
        conn.getresponse().read()
    conn.close()
    assert not [k for k in _objects(client, name) if sha in k]
    assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []


def test_s3_verify_quarantines_and_purge(make_proxy, fakehub: FakeHub, s3_endpoint: str, bucket,  # noqa: ANN001
                                         tmp_path: Path) -> None:
    from hubproxy.cache import manage
    from hubproxy.config import load_settings
    from hubproxy.db import make_engine
    from hubproxy.store import make_store

    name, client = bucket
    env = s3_settings(s3_endpoint, name)
    proxy = make_proxy(**env)
    # The good blob is over 1 MiB: verify reads it by iterating the body left on the bucket's socket
    # (store/rawget.py) rather than splicing it, so a wrong byte there would quarantine it.
    good, bad = os.urandom(2 * 1024 * 1024 + 5), os.urandom(120_000)
    fakehub.add_commit("model", "alice/s3-scrub", {"good.safetensors": good, "bad.safetensors": bad})
    for path, data in (("good.safetensors", good), ("bad.safetensors", bad)):
        assert request("GET", f"{proxy.url}/alice/s3-scrub/resolve/main/{path}")[2] == data
    bad_key = f"hubproxy/blobs/{hashlib.sha256(bad).hexdigest()[:2]}/{hashlib.sha256(bad).hexdigest()}"
    settings = load_settings(environ={f"HUBPROXY_{k.upper()}": v for k, v in env.items()} | {
        "HUBPROXY_DATA_DIR": str(proxy.data_dir)})
    engine, store = make_engine(settings.db_url), make_store(settings)
    # A blob is recorded just after its object is complete in the bucket: wait for both records.
    assert wait_until(lambda: manage.total_size(engine) == len(good) + len(bad), 20)
    client.put_object(Bucket=name, Key=bad_key, Body=b"x" + bad[1:])
    report = manage.verify(engine, store)
    assert report.checked == 2 and report.corrupt == [hashlib.sha256(bad).hexdigest()]
    assert f"hubproxy/quarantine/{hashlib.sha256(bad).hexdigest()}" in _objects(client, name)
    count, size = manage.purge(engine, store, "model", "alice/s3-scrub")
    assert (count, size) == (1, len(good))
    assert [k for k in _objects(client, name) if "/blobs/" in k] == []
    engine.dispose()


def test_s3_outage_is_a_clear_503_and_recovers(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.server import ThreadedMotoServer

    # Its own S3 server (stopped midway), so not the session's fixture that sets these for the others.
    for variable, setting in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                              ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(variable, setting)

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    name = f"hubproxy-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    proxy = make_proxy(**s3_settings(endpoint, name))
    data = os.urandom(300_000)
    fakehub.add_commit("model", "alice/s3-outage", {"w.safetensors": data})
    url = proxy.url + "/alice/s3-outage/resolve/main/w.safetensors"
    assert request("GET", url)[2] == data
    time.sleep(1)  # let the upload finish
    server.stop()
    try:
        status, h, _ = request("GET", url)
        assert status == 503 and h["x-error-code"] == "StoreUnavailable" and h["retry-after"]
    finally:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    status, _, body = request("GET", url)
    assert status == 200 and body == data
    server.stop()


def test_bucket_full_mid_fill(make_proxy, fakehub: FakeHub, s3_endpoint: str, bucket) -> None:  # noqa: ANN001
    """Uploads refused (507): the client still gets the verified bytes, nothing partial stays, hits go on."""
    from tests.relays import S3FaultRelay

    name, client = bucket
    relay = S3FaultRelay(s3_endpoint)
    try:
        proxy = make_proxy(**s3_settings(relay.url, name))
        hot = os.urandom(100_000)
        fakehub.add_commit("model", "alice/s3-full", {"hot.safetensors": hot})
        status, headers, body = request("GET", proxy.url + "/alice/s3-full/resolve/main/hot.safetensors")
        assert status == 200 and body == hot, (status, headers.get("x-error-code"), body[:300])
        deadline = time.monotonic() + 20
        while len(_objects(client, name)) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        # The bucket fills up mid-upload: the first part is taken, the second refused.
        relay.refuse = lambda method, path: method == "PUT" and "partNumber=2" in path
        big = os.urandom(18 * 1024 * 1024)  # three parts of 8 MiB
        fakehub.add_commit("model", "alice/s3-full-big", {"big.safetensors": big})
        status, _, body = request("GET", proxy.url + "/alice/s3-full-big/resolve/main/big.safetensors")
        assert status == 200 and body == big
        deadline = time.monotonic() + 20
        while list((proxy.data_dir / "tmp").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((proxy.data_dir / "tmp").iterdir()) == []  # the spool is cleaned up
        assert not [k for k in _objects(client, name) if hashlib.sha256(big).hexdigest() in k]
        assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
        status, _, body = request("GET", proxy.url + "/alice/s3-full/resolve/main/hot.safetensors")
        assert status == 200 and body == hot  # cache hits keep being served
    finally:
        relay.stop()


def test_bundle_import_into_the_bucket(make_proxy, fakehub: FakeHub, s3_endpoint: str, bucket, tmp_path: Path) -> None:  # noqa: ANN001
    """``sync import`` stores verified blobs in S3; an offline replica on the same bucket serves them."""
    from tests.test_sync import offline_proxy, sync

    name, client = bucket
    bundle = tmp_path / "bundle.tar"
    sync("export", "--source", fakehub.url, "--repo", "alice/tiny-gpt2", "--out", str(bundle),
         env={"HUBPROXY_UPSTREAM_TOKEN": "hf_upstream_secret_token"})
    env = {f"HUBPROXY_{k.upper()}": v for k, v in s3_settings(s3_endpoint, name).items()}
    imported = json.loads(sync("import", str(bundle), "--data-dir", str(tmp_path / "site"), "--json", env=env).stdout)
    stored = {key.rsplit("/", 1)[-1] for key in _objects(client, name)}
    assert imported["blobs_stored"] == imported["blobs"] == len(_bundle_blobs(bundle))
    assert stored == _bundle_blobs(bundle)
    site = offline_proxy(make_proxy, tmp_path / "site", **s3_settings(s3_endpoint, name))
    repo = fakehub.repos[("model", "alice/tiny-gpt2")]
    for path, f in repo.commits[repo.branches["main"]].files.items():
        assert Path(hf_hub_download("alice/tiny-gpt2", path, endpoint=site.url,
                                    cache_dir=tmp_path / "c")).read_bytes() == f.blob.data


def _bundle_blobs(bundle: Path) -> set[str]:
    import tarfile

    with tarfile.open(bundle) as tar:
        return {m.name.rsplit("/", 1)[-1] for m in tar.getmembers() if m.name.startswith("blobs/")}
