"""Parallel ranged fills through real clients: exact bytes, one fetch per blob, faults in single parts."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from hubproxy.cache.spool import Spool
from tests.fakehub import FakeHub
from tests.helpers import (
    ProxyProcess,
    get_after_refill_wait,
    get_cut_before_the_end,
    request,
    scrape,
    value,
    wait_until,
)

MIB = 1024 * 1024
#: Small parts so that test-sized blobs are fetched in many parts by several connections (always: no
#: first stream is fast enough to stay alone).
PARALLEL = {"fill_connections": "4", "fill_part_bytes": str(2 * MIB), "fill_single_stream_mbps": "0"}
#: A CDN-like limit on each connection (about 50 MB/s): slow enough that a fill opens more of them.
CDN_STREAM = (512 * 1024, 0.01)


def _blob(hub: FakeHub, name: str, size: int) -> tuple[bytes, str]:
    data = os.urandom(size)
    hub.add_commit("model", f"alice/{name}", {"w.safetensors": data})
    return data, hashlib.sha256(data).hexdigest()


def _parts_at_once(fakehub: FakeHub, sha: str) -> int:
    """The most parts the fake hub was sending at once (a body stops counting just before its last bytes are
    written, so a lane's next part, asked for once the last one arrived, is never counted beside it)."""
    return fakehub.peak_streams[sha]


def _ranges(hub: FakeHub, sha: str) -> list[tuple[int, int]]:
    """The byte ranges the CDN was asked for, sorted (a request without Range counts as the whole blob)."""
    out = []
    with hub._lock:
        requests = [h for m, p, h in hub.requests if m == "GET" and p.startswith(f"CDN /_cdn/{sha}")]
    for headers in requests:
        first, _, last = headers.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")
        out.append((int(first), int(last) + 1 if last else -1))
    return sorted(out)


def _stored(proxy: ProxyProcess, sha: str) -> Path:
    blob = proxy.data_dir / "blobs" / sha[:2] / sha
    deadline = time.monotonic() + 10
    while not blob.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return blob


def _downloads(proxy: ProxyProcess, repo: str, folder: Path, clients: int) -> list[bytes]:
    """The repo's ``w.safetensors`` as ``clients`` concurrent ``hf_hub_download`` calls got it, each into a cache
    of its own under ``folder``."""

    def download(i: int) -> bytes:
        return Path(hf_hub_download(repo, "w.safetensors", endpoint=proxy.url, cache_dir=folder / f"c{i}")).read_bytes()

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(download, range(clients)))


@pytest.mark.parametrize("workers", [1, 2])
def test_many_clients_get_exact_bytes_from_one_parallel_fetch(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                              workers: int) -> None:
    proxy = make_proxy(workers=str(workers), **PARALLEL)
    size = 21 * MIB + 12345  # not a multiple of the part size
    data, sha = _blob(fakehub, f"parallel{workers}", size)
    fakehub.faults.trickle[sha] = (256 * 1024, 0.02)  # slow enough that every client overlaps the fill
    fakehub.reset_counts()

    assert all(r == data for r in _downloads(proxy, f"alice/parallel{workers}", tmp_path, 6))
    assert fakehub.blob_bytes[sha] == size  # every byte crossed the network once, for six clients
    assert _parts_at_once(fakehub, sha) == 4  # fill_connections parts at once
    ranges = _ranges(fakehub, sha)
    assert ranges[0][0] == 0 and ranges[-1][1] == size and len(ranges) == 11
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # disjoint, in order, no gap
    # The probe went straight to the CDN URL the upstream's HEAD of the file had given, received by a worker
    # thread like every other part (with two workers, the one filling may not be the one that asked the HEAD:
    # then the probe went through the upstream's resolve, once, its body through the event loop).
    resolved = fakehub.count("GET", f"/alice/parallel{workers}/resolve/")
    assert (resolved == 0) if workers == 1 else (resolved <= 1)
    samples = scrape(proxy.url)
    assert value(samples, "hubproxy_fill_requests_total", receiver="event_loop") == resolved
    assert value(samples, "hubproxy_fill_requests_total", receiver="thread") == len(ranges) - resolved
    assert _stored(proxy, sha).read_bytes() == data


@pytest.mark.parametrize(("direct", "held"), [(True, True), (True, False), (False, False)],
                         ids=["direct_writes", "direct_not_held", "page_cache"])
def test_parallel_parts_are_written_past_the_page_cache(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                         direct: bool, held: bool) -> None:
    """Where the spool's filesystem takes direct I/O, every lane of a parallel fill writes its whole pages with
    it (new page-cache pages cost a VM more CPU than the bytes' copy); only the partial pages where batches
    meet go through the page cache. The parts are held in their lanes' buffers until hashed: the hash and the
    clients take them from there, not from the disk (unless ``fill_held_mib`` is 0). Exact bytes either way."""
    if direct and not Spool(tmp_path, direct_writes=True).direct_writes:
        pytest.skip("the tests' temporary folder is on a filesystem without direct writes (tmpfs, NFS)")
    proxy = make_proxy(**PARALLEL, fill_direct_writes=str(direct).lower(), fill_held_mib="256" if held else "0")
    size = 12 * MIB + 777  # the last page partial
    data, sha = _blob(fakehub, f"unpaged{direct}{held}", size)
    fakehub.faults.trickle[sha] = CDN_STREAM
    fakehub.reset_counts()

    assert all(r == data for r in _downloads(proxy, f"alice/unpaged{direct}{held}", tmp_path, 3))
    assert _parts_at_once(fakehub, sha) == 4 and fakehub.blob_bytes[sha] == size
    samples = scrape(proxy.url)
    unpaged = value(samples, "hubproxy_fill_written_bytes_total", how="direct")
    paged = value(samples, "hubproxy_fill_written_bytes_total", how="page_cache")
    assert unpaged + paged == size
    from_buffers = value(samples, "hubproxy_fill_hashed_bytes_total", source="buffer")
    sent_from_buffers = value(samples, "hubproxy_fill_sent_bytes_total", source="buffer")
    if direct:
        assert unpaged >= 0.9 * size, f"only {unpaged} of {size} bytes were written past the page cache"
    else:
        assert unpaged == 0
    if held:
        assert from_buffers >= 0.9 * size, f"only {from_buffers} of {size} bytes were hashed from held parts"
        assert sent_from_buffers > 0
    else:
        assert sent_from_buffers == 0
    assert _stored(proxy, sha).read_bytes() == data


def test_a_dropped_part_resumes_on_its_own(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    proxy = make_proxy(**PARALLEL)
    size = 16 * MIB
    data, sha = _blob(fakehub, "droppart", size)
    cut = 9 * MIB + 4321  # inside the fifth part
    fakehub.faults.drop_after[sha] = [cut, 1]
    fakehub.faults.trickle[sha] = CDN_STREAM
    fakehub.reset_counts()
    local = hf_hub_download("alice/droppart", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path)
    assert Path(local).read_bytes() == data
    ranges = _ranges(fakehub, sha)
    assert (8 * MIB, 10 * MIB) in ranges  # the part that was cut
    resumed = [r for r in ranges if 8 * MIB < r[0] < 10 * MIB]
    assert len(resumed) == 1 and resumed[0][1] == 10 * MIB  # only its rest was asked again
    assert fakehub.blob_bytes[sha] <= 1.02 * size
    assert _parts_at_once(fakehub, sha) == 4


def test_a_fast_upstream_keeps_one_stream(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    """Unthrottled loopback: the probe's stream is faster than more connections would help, so the rest of
    the blob comes in one more answer (the proxy's CPU is the limit there, not the stream)."""
    proxy = make_proxy(**{**PARALLEL, "fill_single_stream_mbps": "0.001"})  # any stream counts as fast
    size = 24 * MIB
    data, sha = _blob(fakehub, "fastone", size)
    fakehub.reset_counts()
    status, _, body = request("GET", proxy.url + "/alice/fastone/resolve/main/w.safetensors")
    assert status == 200 and body == data
    assert _ranges(fakehub, sha) == [(0, 2 * MIB), (2 * MIB, size)] and fakehub.peak_streams[sha] == 1
    # Arriving in order, the bytes were hashed from the buffers they were received into, lent to the hasher
    # (``hashfeed.py``), not read back from the spool file; each byte once. (A loan the hasher is slow to read
    # is taken back and hashed from the spool instead: most, not all.)
    samples = scrape(proxy.url)
    lent = value(samples, "hubproxy_fill_hashed_bytes_total", source="buffer")
    assert lent + value(samples, "hubproxy_fill_hashed_bytes_total", source="spool") == size
    assert lent >= size // 2


def test_a_cdn_limited_stream_opens_more_connections_at_the_default_threshold(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    """With ``fill_single_stream_mbps`` at its default, a stream the CDN holds to about 50 MB/s is judged slow over
    its reads and over the whole stretch (``cache/probespeed.py``), and the fill widens."""
    proxy = make_proxy(fill_connections="4", fill_part_bytes=str(2 * MIB))
    size = 16 * MIB
    data, sha = _blob(fakehub, "cdnlimited", size)
    fakehub.faults.trickle[sha] = CDN_STREAM
    fakehub.reset_counts()
    status, _, body = request("GET", proxy.url + "/alice/cdnlimited/resolve/main/w.safetensors")
    assert status == 200 and body == data
    assert _parts_at_once(fakehub, sha) > 1 and fakehub.blob_bytes[sha] == size


def test_the_one_stream_of_a_fast_upstream_resumes_after_a_drop(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy(**{**PARALLEL, "fill_single_stream_mbps": "0.001"})
    size = 24 * MIB
    data, sha = _blob(fakehub, "fastdrop", size)
    cut = 13 * MIB + 777  # inside the one answer that follows the probe
    fakehub.faults.drop_after[sha] = [cut, 1]
    fakehub.reset_counts()
    status, _, body = request("GET", proxy.url + "/alice/fastdrop/resolve/main/w.safetensors")
    assert status == 200 and body == data
    ranges = _ranges(fakehub, sha)
    assert ranges[:2] == [(0, 2 * MIB), (2 * MIB, size)]
    assert len(ranges) == 3 and 2 * MIB < ranges[2][0] <= cut and ranges[2][1] == size  # only the rest, once
    assert fakehub.blob_bytes[sha] <= 1.02 * size


def test_a_corrupt_byte_in_the_one_stream_never_completes_a_file(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    """The one stream's bytes are hashed from the buffers they arrive in (lent to the hasher), not from the spool
    file as the parts' are: a flipped byte there is caught all the same."""
    proxy = make_proxy(**{**PARALLEL, "fill_single_stream_mbps": "0.001"})
    size = 24 * MIB
    data, sha = _blob(fakehub, "fastcorrupt", size)
    fakehub.faults.corrupt_next[sha] = 1  # the middle byte, in the answer after the probe
    assert get_cut_before_the_end(proxy.port, "/alice/fastcorrupt/resolve/main/w.safetensors", size) < size
    assert not _stored(proxy, sha).exists()
    assert value(scrape(proxy.url), "hubproxy_fill_hashed_bytes_total", source="buffer") >= size // 2
    status, _, body = get_after_refill_wait(proxy.url + "/alice/fastcorrupt/resolve/main/w.safetensors")
    assert status == 200 and body == data


def test_a_corrupt_byte_in_one_part_never_completes_a_file(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                           tmp_path: Path) -> None:
    proxy = make_proxy(**PARALLEL)
    size = 12 * MIB
    data, sha = _blob(fakehub, "corruptpart", size)
    fakehub.faults.corrupt.add(sha)  # flips the middle byte, which lies in one part
    get_cut_before_the_end(proxy.port, "/alice/corruptpart/resolve/main/w.safetensors", size)
    with pytest.raises(Exception):  # noqa: B017 - the client must fail, whatever it calls it
        hf_hub_download("alice/corruptpart", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path)
    assert not list(tmp_path.rglob("w.safetensors"))  # no client kept a file
    assert not _stored(proxy, sha).exists()
    assert fakehub.blob_bytes[sha] <= 2 * size  # two failed fills in a row: the next one waits
    fakehub.faults.corrupt.discard(sha)
    status, _, body = get_after_refill_wait(proxy.url + "/alice/corruptpart/resolve/main/w.safetensors")
    assert status == 200 and body == data
    local = hf_hub_download("alice/corruptpart", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path / "ok")
    assert Path(local).read_bytes() == data
    assert _stored(proxy, sha).read_bytes() == data


def test_an_upstream_that_ignores_range_gets_one_stream(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                        tmp_path: Path) -> None:
    proxy = make_proxy(**PARALLEL)
    size = 10 * MIB
    data, sha = _blob(fakehub, "norange", size)
    fakehub.faults.ignore_range.add(sha)
    fakehub.reset_counts()
    assert all(g == data for g in _downloads(proxy, "alice/norange", tmp_path, 3))
    assert len(_ranges(fakehub, sha)) == 1 and fakehub.blob_bytes[sha] == size
    status, _, body = request("GET", proxy.url + "/alice/norange/resolve/main/w.safetensors",
                              {"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200]


def test_an_expired_cdn_link_sends_the_parts_back_through_the_upstream(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                                      tmp_path: Path) -> None:
    """Signed CDN links expire: once the CDN answers 403, the remaining parts are asked of the upstream's resolve
    again (which hands out a fresh link), and the fill completes with every byte fetched about once."""
    proxy = make_proxy(**PARALLEL)
    size = 24 * MIB
    data, sha = _blob(fakehub, "expiring", size)
    fakehub.faults.trickle[sha] = CDN_STREAM
    fakehub.faults.cdn_expires[sha] = 3  # the probe and two more parts, then the link handed out is dead
    fakehub.reset_counts()
    local = hf_hub_download("alice/expiring", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path)
    assert Path(local).read_bytes() == data
    parts = [(p, h) for m, p, h in fakehub.requests if m == "GET" and "Range" in h]
    resolves = [p for p, _ in parts if "/alice/expiring/resolve/" in p]
    links = [int(p.rpartition("sig=")[2]) for p, _ in parts if p.startswith(f"CDN /_cdn/{sha}")]
    assert len(resolves) >= 2  # the probe, and at least one part that asked for a fresh link
    assert links.count(links[0]) >= 4  # the probe's link: three answers, then refusals
    # A fresh link is learned and used for several parts, not asked for per part.
    assert max(Counter(s for s in links if s > links[0]).values()) >= 2
    assert fakehub.blob_bytes[sha] <= 1.02 * size
    assert _stored(proxy, sha).read_bytes() == data


def test_a_stalled_parallel_fill_does_not_hold_up_other_requests(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    """Each part in flight keeps a thread blocked on its socket while the upstream is silent. Those threads are the
    fill's own, not the worker threads that disk, hashing and database calls share: 40 stalled parts (more than
    that shared pool has threads) leave other requests answered at once."""
    proxy = make_proxy(workers="1", fill_connections="40", fill_part_bytes=str(MIB), fill_single_stream_mbps="0")
    fakehub.add_commit("model", "alice/other", {"config.json": b'{"model_type": "bert"}'})
    other = proxy.url + "/alice/other/resolve/main/config.json"
    assert request("GET", other)[0] == 200  # cached: what follows needs no upstream
    data, sha = _blob(fakehub, "stalled", 60 * MIB)
    fakehub.faults.trickle[sha] = (64 * 1024, 0.05)  # slow: every lane starts and stays busy
    got: list[bytes] = []
    with ThreadPoolExecutor(1) as pool:
        download = pool.submit(lambda: got.append(request("GET", proxy.url + "/alice/stalled/resolve/main/w.safetensors",
                                                          timeout=120)[2]))
        deadline = time.monotonic() + 30
        while fakehub.peak_streams[sha] < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fakehub.peak_streams[sha] >= 40
        fakehub.faults.trickle[sha] = (64 * 1024, 8.0)  # now every part waits 8 s between pieces
        time.sleep(0.5)
        for _ in range(3):
            t0 = time.monotonic()
            status, _, body = request("GET", other)
            waited = time.monotonic() - t0
            assert status == 200 and body == b'{"model_type": "bert"}'
            assert waited < 3.0, f"a cached file took {waited:.1f} s while the fill's parts were stalled"
        fakehub.faults.trickle.pop(sha)
        download.result(120)
    assert got == [data]


def test_a_range_far_ahead_is_answered_from_the_parallel_fill(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    """A range beyond what the fill has written (a file system's read, one of hf_transfer's chunks) gets its part
    fetched next and is answered as that part lands: no second fetch of those bytes from the upstream."""
    proxy = make_proxy(**PARALLEL)
    size = 40 * MIB
    data, sha = _blob(fakehub, "farahead", size)
    fakehub.faults.trickle[sha] = CDN_STREAM
    fakehub.reset_counts()
    far = 30 * MIB + 5
    status, _, body = request("GET", proxy.url + "/alice/farahead/resolve/main/w.safetensors",
                              {"Range": f"bytes={far}-{far + MIB - 1}"})
    assert status == 206 and body == data[far: far + MIB]
    assert request("GET", proxy.url + "/alice/farahead/resolve/main/w.safetensors")[2] == data
    with fakehub._lock:
        order = [h.get("Range", "") for m, p, h in fakehub.requests if m == "GET" and p.startswith(f"CDN /_cdn/{sha}")]
    far_part, before_it = f"bytes={30 * MIB}-{32 * MIB - 1}", f"bytes={28 * MIB}-{30 * MIB - 1}"
    assert order.index(far_part) < order.index(before_it)  # taken before the parts between
    # Every byte once (the fake hub counts a piece just after sending it: the last may lag the client).
    assert wait_until(lambda: fakehub.blob_bytes[sha] >= size) and fakehub.blob_bytes[sha] == size
    assert len(order) == size // (2 * MIB)


def test_a_far_range_holding_the_last_byte_waits_for_verification(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    """Far ranges ahead of a one-stream fill are fetched on their own, except one that reaches the blob's end: an
    unverified last byte would let a client that resumes, or assembles chunks, complete a wrong file."""
    proxy = make_proxy(**{**PARALLEL, "fill_single_stream_mbps": "0.001"})  # one stream after the probe
    size = 40 * MIB
    _, sha = _blob(fakehub, "farend", size)
    fakehub.faults.trickle[sha] = (256 * 1024, 0.02)  # about 13 MB/s: far ahead for a while
    fakehub.faults.corrupt.add(sha)  # the middle byte
    path = "/alice/farend/resolve/main/w.safetensors"
    with ThreadPoolExecutor(1) as pool:
        whole = pool.submit(get_cut_before_the_end, proxy.port, path, size)
        assert wait_until(lambda: fakehub.count("GET", f"CDN /_cdn/{sha}") >= 2)  # the stream after the probe
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
        conn.request("GET", path, headers={"Range": f"bytes={size - MIB}-"})
        resp = conn.getresponse()
        assert resp.status == 206
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
        conn.close()
        whole.result(60)
    with fakehub._lock:
        asked = [h.get("Range", "") for m, _, h in fakehub.requests if m == "GET"]
    assert not any(r.startswith(f"bytes={size - MIB}-") for r in asked)  # not asked of the upstream on its own
