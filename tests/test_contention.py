"""Many cold requests at once: no 5xx, and a 200 is always the whole file (or a cut connection to resume)."""

from __future__ import annotations

import hashlib
import http.client
import os
from concurrent.futures import ThreadPoolExecutor

from tests.fakehub import FakeHub
from tests.helpers import s3_settings


def _get(port: int, path: str, method: str = "GET") -> tuple[int, int, bool]:
    """(status, bytes received, whether the body was cut short)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        try:
            body = resp.read()
            return resp.status, len(body), False
        except http.client.IncompleteRead as exc:
            return resp.status, len(exc.partial), True
    finally:
        conn.close()


def test_simultaneous_cold_heads_on_one_sqlite_process(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy()
    for round_ in range(4):  # a new repo each round: every request is cold
        repo = f"alice/cold-heads-{round_}"
        fakehub.add_commit("model", repo, {"config.json": b"{}", "w.safetensors": os.urandom(1 << 20)})
        paths = [f"/{repo}/resolve/main/{name}" for name in ("config.json", "w.safetensors")] * 4
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: _get(proxy.port, p, "HEAD"), paths))
        assert [a[0] for a in answers] == [200] * 8, answers


def test_two_s3_replicas_under_a_crowd(make_proxy, fakehub: FakeHub, tmp_path, pg_url: str,  # noqa: ANN001
                                       s3_endpoint: str, bucket) -> None:  # noqa: ANN001
    name, _ = bucket
    s3 = s3_settings(s3_endpoint, name, database_url=pg_url)
    replicas = [make_proxy(data_dir=tmp_path / "a", **s3), make_proxy(data_dir=tmp_path / "b", **s3)]
    data = os.urandom(32 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/crowd", {"w.safetensors": data})
    fakehub.faults.trickle[sha] = (1 << 20, 0.02)
    fakehub.reset_counts()
    path = "/alice/crowd/resolve/main/w.safetensors"
    jobs = [("HEAD", replicas[i % 2].port) for i in range(24)] + [("GET", replicas[i % 2].port) for i in range(8)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda job: (job[0], *_get(job[1], path, job[0])), jobs))
    assert all(status < 500 for _, status, _, _ in answers), answers
    for method, status, size, cut in answers:
        assert status == 200, answers
        if method == "GET":
            assert size == len(data) or (cut and size > 0), answers  # never an empty 200
    assert fakehub.blob_bytes[sha] <= len(data) * 1.02
