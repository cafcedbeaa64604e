"""Two hubproxy replicas on different ports sharing PostgreSQL and one store folder."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from huggingface_hub import hf_hub_download

from tests.fakehub import FakeHub
from tests.helpers import AdminClient, admin_json, request, s3_settings, wait_until


def test_two_replicas_one_fetch_and_survive_a_killed_filler(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                            pg_url: str) -> None:
    shared = tmp_path / "shared-store"
    a = make_proxy(data_dir=shared, database_url=pg_url)
    b = make_proxy(data_dir=shared, database_url=pg_url)
    _six_clients_one_fetch(a, b, fakehub, "alice/replicated", 12 * 1024 * 1024, tmp_path)

    # Now kill the replica that is filling; clients of the other one still get exact bytes.
    data2 = os.urandom(12 * 1024 * 1024)
    sha2 = hashlib.sha256(data2).hexdigest()
    fakehub.add_commit("model", "alice/replicated2", {"w.safetensors": data2})
    fakehub.faults.trickle[sha2] = (256 * 1024, 0.03)
    results: dict[int, bytes] = {}

    def fetch(i: int, endpoint: str) -> None:
        results[i] = Path(hf_hub_download("alice/replicated2", "w.safetensors", endpoint=endpoint,
                                          cache_dir=tmp_path / f"k{i}")).read_bytes()

    first = threading.Thread(target=lambda: _swallow(fetch, 0, a.url), daemon=True)
    first.start()  # replica a becomes the filler
    deadline = time.monotonic() + 20
    part = shared / "tmp" / f"{sha2}.part"
    while not (part.exists() and part.stat().st_size > 1024 * 1024) and time.monotonic() < deadline:
        time.sleep(0.05)
    followers = [threading.Thread(target=fetch, args=(i, b.url)) for i in (1, 2)]
    for t in followers:
        t.start()
    time.sleep(0.5)
    a.kill()
    fakehub.faults.trickle.pop(sha2)
    for t in followers:
        t.join(120)
    assert results.get(1) == data2 and results.get(2) == data2
    assert (shared / "blobs" / sha2[:2] / sha2).read_bytes() == data2
    # The survivor continued the dead filler's spool file: the upstream sent the blob about once in all.
    assert fakehub.blob_bytes[sha2] <= 1.1 * len(data2), fakehub.blob_bytes[sha2] / len(data2)


def _six_clients_one_fetch(a, b, fakehub: FakeHub, repo: str, size: int, cache: Path) -> None:  # noqa: ANN001
    """Six clients, alternating between replicas ``a`` and ``b``, download a new trickled blob of ``repo``: each
    gets exact bytes and the upstream sends the blob once (in parts), whichever replica fills it."""
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", repo, {"w.safetensors": data})
    fakehub.faults.trickle[sha] = (256 * 1024, 0.03)
    fakehub.reset_counts()

    def download(i: int) -> bytes:
        endpoint = (a if i % 2 == 0 else b).url
        return Path(hf_hub_download(repo, "w.safetensors", endpoint=endpoint, cache_dir=cache / f"c{i}")).read_bytes()

    with ThreadPoolExecutor(6) as pool:
        assert all(r == data for r in pool.map(download, range(6)))
    assert fakehub.blob_bytes[sha] == len(data)


def _swallow(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    try:
        return fn(*args, **kwargs)
    except Exception:  # noqa: BLE001
        return None


def test_two_replicas_on_s3_fetch_once_and_take_over(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                     pg_url: str, s3_endpoint: str, bucket) -> None:  # noqa: ANN001
    name, client = bucket
    s3 = s3_settings(s3_endpoint, name, database_url=pg_url, fill_lease_seconds="30", fill_connections="2",
                     fill_part_bytes=str(4 * 1024 * 1024), fill_single_stream_mbps="0")  # a's parallel fill is cut midway
    a = make_proxy(data_dir=tmp_path / "spool-a", **s3)
    b = make_proxy(data_dir=tmp_path / "spool-b", **s3)  # separate spools: only the lease coordinates them
    _six_clients_one_fetch(a, b, fakehub, "alice/s3-replicated", 10 * 1024 * 1024, tmp_path)

    # The replica holding the lease dies mid-fill: the other takes over and its clients get exact bytes. (Big
    # enough that clients resume from 10 MiB boundaries, as huggingface_hub 2.x does, not from 0.)
    data2 = os.urandom(48 * 1024 * 1024)
    sha2 = hashlib.sha256(data2).hexdigest()
    fakehub.add_commit("model", "alice/s3-replicated2", {"w.safetensors": data2})
    fakehub.faults.trickle[sha2] = (1024 * 1024, 0.05)
    threading.Thread(target=lambda: _swallow(hf_hub_download, "alice/s3-replicated2", "w.safetensors",
                                             endpoint=a.url, cache_dir=tmp_path / "k0"), daemon=True).start()
    results: dict[int, bytes] = {}

    def fetch(i: int) -> None:
        try:
            results[i] = Path(hf_hub_download("alice/s3-replicated2", "w.safetensors", endpoint=b.url,
                                              cache_dir=tmp_path / f"k{i}")).read_bytes()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = repr(exc).encode()

    lock = tmp_path / "spool-a" / "tmp" / f"{sha2}.lock"

    def wait_for(size: int) -> None:
        """Until a's fill holds more than ``size`` bytes from 0 (the prefix it publishes in the lock file)."""
        deadline = time.monotonic() + 30
        while not (lock.exists() and int(lock.read_bytes()[:20] or b"0") > size):
            assert time.monotonic() < deadline, "replica a is not filling"
            time.sleep(0.05)

    wait_for(1024 * 1024)  # a holds the lease and fills
    followers = [threading.Thread(target=fetch, args=(i,)) for i in (1, 2, 3, 4)]
    for t in followers:
        t.start()
    wait_for(26 * 1024 * 1024)
    a.kill()  # halfway: four clients of b are relaying a's fill
    fakehub.faults.trickle.pop(sha2)
    for t in followers:
        t.join(120)
    outcome = {i: "exact" if results.get(i) == data2 else _describe(results.get(i), data2) for i in (1, 2, 3, 4)}
    assert set(outcome.values()) == {"exact"}, (outcome, b.log()[-6000:])
    assert "taking over" in b.log()  # the lease of the dead replica was taken over, not waited out
    # The dead replica's spool is on its own disk: at most one more fetch, never one per client.
    assert fakehub.blob_bytes[sha2] <= 2 * len(data2), fakehub.blob_bytes[sha2] / len(data2)
    key = f"hubproxy/blobs/{sha2[:2]}/{sha2}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            assert client.get_object(Bucket=name, Key=key)["Body"].read() == data2
            break
        except client.exceptions.NoSuchKey:
            time.sleep(0.2)
    else:
        raise AssertionError("the surviving replica did not store the blob")


def test_replicas_relay_with_projects_and_anonymous_access_off(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                               pg_url: str, s3_endpoint: str, bucket) -> None:  # noqa: ANN001
    name, _ = bucket
    s3 = s3_settings(s3_endpoint, name, database_url=pg_url, anonymous_access="off")
    a = make_proxy(data_dir=tmp_path / "spool-a", **s3)
    b = make_proxy(data_dir=tmp_path / "spool-b", **s3)
    rest = AdminClient(b.url, admin_json(a.data_dir, "bootstrap", database_url=pg_url)["token"])  # one database
    rest.call("POST", "/projects", {"name": "team", "allow": ["models:alice/*"]})
    token = rest.user("dev", "team", "developer")
    data = os.urandom(8 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/relayed", {"w.safetensors": data})
    fakehub.faults.trickle[sha] = (256 * 1024, 0.03)
    fakehub.reset_counts()

    def download(i: int) -> bytes:
        return Path(hf_hub_download("alice/relayed", "w.safetensors", endpoint=(a if i % 2 == 0 else b).url,
                                    token=token, cache_dir=tmp_path / f"c{i}")).read_bytes()

    with ThreadPoolExecutor(4) as pool:
        assert all(r == data for r in pool.map(download, range(4)))
    assert fakehub.blob_bytes[sha] == len(data)  # one fetch (in parts) for six clients on two replicas
    def served() -> list[dict]:
        return [e for e in rest.call("GET", "/audit/downloads?repo=alice/relayed") if e["status"] == 200]

    assert wait_until(lambda: len(served()) >= 4, 15)
    events = served()
    sources = sorted(e["cache"] for e in events)
    assert sources.count("relay") >= 1 and "passthrough" not in sources, sources
    # The relay route is for replicas only: unsigned requests are refused.
    status, _, _ = request("GET", f"{a.url}/_hubproxy/relay/{sha}")
    assert status == 403


def _describe(got: bytes | None, want: bytes) -> str:
    """What a client received instead of the blob: an error, or where its bytes first differ."""
    if got is None:
        return "nothing (still downloading)"
    if len(got) != len(want) or not got.startswith(want[:16]):
        return f"{len(got)} bytes: {got[:200]!r}"
    first = next(i for i, (x, y) in enumerate(zip(got, want, strict=False)) if x != y)
    return f"{len(got)} bytes, first wrong byte at {first}"


def test_a_process_sharing_the_spool_answers_far_ranges_from_the_fillers_parts(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                                              tmp_path: Path, pg_url: str) -> None:
    """Far ranges asked of a process that follows another's fill are answered from the parts the filler shares
    (asked for first), not fetched again; when the filler dies, the process that takes over keeps those ranges."""
    mib = 1024 * 1024
    shared = tmp_path / "shared-store"
    parallel = {"fill_connections": "4", "fill_part_bytes": str(2 * mib), "fill_single_stream_mbps": "0",
                "database_url": pg_url}
    a = make_proxy(data_dir=shared, **parallel)
    b = make_proxy(data_dir=shared, **parallel)
    size = 40 * mib
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/sharedparts", {"w.safetensors": data})
    fakehub.faults.trickle[sha] = (128 * 1024, 0.05)  # about 2.5 MB/s a connection: 16 s in order
    fakehub.reset_counts()
    path = "/alice/sharedparts/resolve/main/w.safetensors"
    threading.Thread(target=lambda: _swallow(request, "GET", a.url + path), daemon=True).start()  # a fills
    assert wait_until(lambda: (shared / "tmp" / f"{sha}.part").exists())
    far = 30 * mib + 5
    status, _, body = request("GET", b.url + path, {"Range": f"bytes={far}-{far + 65535}"})
    assert status == 206 and body == data[far: far + 65536]
    with fakehub._lock:
        asked = [h.get("Range", "") for m, p, h in fakehub.requests if m == "GET" and p.startswith(f"CDN /_cdn/{sha}")]
    assert not any(r.startswith(f"bytes={far}-") for r in asked)  # not fetched on its own
    assert f"bytes={30 * mib}-{32 * mib - 1}" in asked and f"bytes={28 * mib}-{30 * mib - 1}" not in asked
    seen = len(fakehub.requests)
    a.kill()
    fakehub.faults.trickle[sha] = (1024 * 1024, 0.0)
    status, _, body = request("GET", b.url + path, timeout=120)
    assert status == 200 and body == data
    with fakehub._lock:
        after = [h.get("Range", "") for m, p, h in fakehub.requests[seen:] if m == "GET" and sha in p]
    covered = [(int(a), int(b) if b else size) for a, _, b in (r.removeprefix("bytes=").partition("-") for r in after)]
    assert covered and not any(a <= far <= b for a, b in covered)  # what b answered from was kept, not fetched again
    assert wait_until(lambda: (shared / "blobs" / sha[:2] / sha).exists())
    assert (shared / "blobs" / sha[:2] / sha).read_bytes() == data
