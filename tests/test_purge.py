"""A purge (or a quarantine) reaches every running process: nothing deleted is served or redirected to."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from tests.fakehub import FakeHub, git_sha1
from tests.helpers import hubproxy_cli, request, s3_settings, wait_until


def test_purge_reaches_every_worker_on_a_local_store(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    data = os.urandom(2 * 1024 * 1024)
    fakehub.add_commit("model", "alice/purge-local", {"w.safetensors": data, "notes.txt": b"plain text"})
    fakehub.faults.opaque_etag.add(git_sha1(b"plain text"))  # an ETag that is no content hash: passed through
    proxy = make_proxy(workers="2")
    url = proxy.url + "/alice/purge-local/resolve/main/"
    sha = hashlib.sha256(data).hexdigest()
    blob = proxy.data_dir / "blobs" / sha[:2] / sha
    for _ in range(6):  # new connections: both workers serve it and remember it as stored
        assert request("GET", url + "w.safetensors")[2] == data
        assert request("GET", url + "notes.txt")[2] == b"plain text"
    assert wait_until(blob.exists)
    out = hubproxy_cli(proxy.data_dir, "cache", "purge", "alice/purge-local", "--json")  # no ValueError
    assert '"blobs": 1' in out.stdout and not blob.exists()
    fakehub.reset_counts()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: request("GET", url + "w.safetensors"), range(8)))
    assert [s for s, _, _ in answers] == [200] * 8 and all(body == data for _, _, body in answers), [(s, h.get("x-error-message"), len(b)) for s, h, b in answers]
    assert fakehub.count("GET", f"CDN /_cdn/{sha}") >= 1  # filled again, from the upstream


def test_purge_and_quarantine_reach_replicas_on_s3_with_redirects(make_proxy, fakehub: FakeHub, tmp_path,  # noqa: ANN001
                                                                  pg_url: str, s3_endpoint: str, bucket) -> None:  # noqa: ANN001
    name, client = bucket
    s3 = s3_settings(s3_endpoint, name, s3_redirect="true", database_url=pg_url)
    a = make_proxy(data_dir=tmp_path / "a", **s3)
    b = make_proxy(data_dir=tmp_path / "b", **s3)
    data = os.urandom(3 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    key = f"hubproxy/blobs/{sha[:2]}/{sha}"
    fakehub.add_commit("model", "alice/purge-s3", {"w.safetensors": data})
    path = "/alice/purge-s3/resolve/main/w.safetensors"
    assert request("GET", a.url + path)[2] == data
    assert wait_until(lambda: any(o["Key"] == key for o in client.list_objects_v2(Bucket=name).get("Contents", [])), timeout=20)
    for proxy in (a, b):
        status, headers, _ = request("HEAD", proxy.url + path)
        assert status == 302, proxy.url

    def never_a_dead_redirect() -> None:
        for proxy in (a, b):
            status, headers, body = request("GET", proxy.url + path)
            if status == 302:
                status, _, body = request("GET", headers["location"])
            assert status == 200 and body == data, (proxy.url, status)

    hubproxy_cli(a.data_dir, "cache", "purge", "alice/purge-s3", **s3)
    assert not [o for o in client.list_objects_v2(Bucket=name).get("Contents", []) if o["Key"] == key]
    fakehub.reset_counts()
    never_a_dead_redirect()  # at once, without waiting for anything
    assert wait_until(lambda: any(o["Key"] == key for o in client.list_objects_v2(Bucket=name).get("Contents", [])), timeout=20)
    # Filled again once, whichever replica asked: a replica that got the lease after the other stored the blob
    # finds it stored (a second fill's upload, completed later, once put the good bytes back over the damage below).
    assert fakehub.blob_bytes[sha] <= 1.02 * len(data)
    # A verify that quarantines a damaged object: no replica redirects to where it was.
    client.put_object(Bucket=name, Key=key, Body=b"x" + data[1:])
    result = hubproxy_cli(a.data_dir, "cache", "verify", "--json", check=False, **s3)
    assert result.returncode == 1 and sha in result.stdout
    never_a_dead_redirect()
