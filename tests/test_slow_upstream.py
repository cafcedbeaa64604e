"""Parts of parallel fills waiting for a slow CDN hold none of the worker threads the rest of the process shares.

Each part of a parallel fill is asked for on a blocking connection; until the head of its answer arrives, the
thread asking waits. Those waits used to be in the default worker threads (32) every disk, hash and database
call shares: a few fills of 16 parts from a CDN slow to answer filled them all, and a download of a stored file
waited as long as the CDN took. They are now in the fill's own lane threads (``cache/parts.py``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

from tests.fakehub import FakeHub
from tests.helpers import request, wait_until

MIB = 1024 * 1024
#: Seconds the CDN takes before the head of each ranged answer.
LATE = 2.0


def test_parts_waiting_for_a_slow_cdn_leave_the_worker_threads_free(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy(fill_connections="16", fill_part_bytes=str(MIB), fill_single_stream_mbps="0")
    stored = os.urandom(2 * MIB)
    fakehub.add_commit("model", "alice/beside-late", {"w.safetensors": stored})
    stored_path = "/alice/beside-late/resolve/main/w.safetensors"
    assert request("GET", proxy.url + stored_path)[2] == stored
    blobs = {}
    for i in range(3):  # three fills of 16 parts at once: 45 part requests besides the probes, more than 32 threads
        data = os.urandom(17 * MIB)
        fakehub.add_commit("model", f"alice/late-cdn{i}", {"w.safetensors": data})
        sha = hashlib.sha256(data).hexdigest()
        fakehub.faults.answer_delay[sha] = LATE
        blobs[f"/alice/late-cdn{i}/resolve/main/w.safetensors"] = (data, sha)
    got: dict[str, bytes] = {}

    def download(path: str) -> None:
        got[path] = request("GET", proxy.url + path)[2]

    threads = [threading.Thread(target=download, args=(p,), daemon=True) for p in blobs]
    for t in threads:
        t.start()

    def parts_asked() -> int:
        shas = {sha for _, sha in blobs.values()}
        return sum(1 for m, p, h in list(fakehub.requests)
                   if m == "GET" and "Range" in h and p.startswith("CDN /_cdn/") and p[10:74] in shas)

    # The probes were answered (late) and the other parts are being asked for: each waits for its answer. (Not
    # all 45 need to be seen: where the asking threads are the shared ones, only as many as those are asked.)
    assert wait_until(lambda: parts_asked() >= 3 + 28, LATE * 3)
    time.sleep(0.3)
    started = time.monotonic()
    status, _, body = request("GET", proxy.url + stored_path)
    took = time.monotonic() - started
    assert status == 200 and body == stored
    assert took < LATE / 2, f"a stored file took {took:.1f}s while the fills waited for the CDN"
    for t in threads:
        t.join(60)
    assert {p: hashlib.sha256(b).hexdigest() for p, b in got.items()} == {p: sha for p, (_, sha) in blobs.items()}
