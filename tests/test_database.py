"""The index on PostgreSQL (database ``test`` on 127.0.0.1:5432) and schema migrations."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from huggingface_hub import hf_hub_download, snapshot_download
from sqlalchemy import text

from hubproxy.db import head_revision, make_engine, normalize_url, schema_revision
from tests.fakehub import FakeHub


def test_migrations_reach_head_and_are_idempotent(tmp_path: Path, pg_url: str) -> None:
    for url in (f"sqlite:///{tmp_path / 'a.db'}", pg_url):
        engine = make_engine(url)
        assert schema_revision(engine) == head_revision()
        engine.dispose()
        engine = make_engine(url)  # a restart (or a second replica) finds nothing to do
        assert schema_revision(engine) == head_revision()
        engine.dispose()


def test_postgres_index_serves_after_restart_offline(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                     pg_url: str) -> None:
    data_dir = tmp_path / "store"
    online = make_proxy(data_dir=data_dir, database_url=pg_url)
    folder = Path(snapshot_download("alice/tiny-gpt2", endpoint=online.url, cache_dir=tmp_path / "a"))
    online.stop()
    offline = make_proxy(data_dir=data_dir, database_url=pg_url, args=["--offline"], upstream="http://127.0.0.1:9")
    again = Path(snapshot_download("alice/tiny-gpt2", endpoint=offline.url, cache_dir=tmp_path / "b"))
    assert {p.name: p.read_bytes() for p in again.iterdir()} == {p.name: p.read_bytes() for p in folder.iterdir()}
    assert not (data_dir / "hubproxy.db").exists()  # the index really lives in PostgreSQL


def test_two_workers_on_postgres_fetch_once(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                            pg_url: str) -> None:
    data = os.urandom(8 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/pg-big", {"w.safetensors": data})
    fakehub.faults.trickle[sha] = (512 * 1024, 0.02)
    proxy = make_proxy(database_url=pg_url, workers="2")
    fakehub.reset_counts()

    def download(i: int) -> bytes:
        return Path(hf_hub_download("alice/pg-big", "w.safetensors", endpoint=proxy.url,
                                    cache_dir=tmp_path / f"c{i}")).read_bytes()

    with ThreadPoolExecutor(6) as pool:
        assert all(r == data for r in pool.map(download, range(6)))
    assert fakehub.count("GET", f"CDN /_cdn/{sha}") == 1


def test_database_outage_is_a_clear_503_and_recovers(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                      pg_url: str) -> None:
    from tests.helpers import request
    from tests.relays import TcpForwarder

    relay = TcpForwarder(("127.0.0.1", 5432))
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    proxy = make_proxy(database_url=url)
    hot = proxy.url + "/alice/files/resolve/main/config.json"
    assert request("GET", hot)[0] == 200
    relay.cut()
    try:
        status, _, _ = request("GET", hot)  # known in memory: no database needed
        assert status == 200
        status, h, _ = request("HEAD", proxy.url + "/alice/tiny-gpt2/resolve/main/config.json")
        assert status == 503 and h["x-error-code"] == "DatabaseUnavailable"
        # Readiness says so, naming the database (a load balancer then routes to other replicas).
        status, _, body = request("GET", proxy.url + "/ready")
        checks = json.loads(body)["checks"]
        assert status == 503 and checks["store"] == "ok" and checks["database"] != "ok"
    finally:
        relay.restore()
    assert request("GET", proxy.url + "/ready")[0] == 200
    status, _, body = request("GET", proxy.url + "/alice/tiny-gpt2/resolve/main/config.json")
    assert status == 200 and body == fakehub.repos[("model", "alice/tiny-gpt2")].commits[
        fakehub.repos[("model", "alice/tiny-gpt2")].branches["main"]].files["config.json"].blob.data


def test_upgrade_keeps_the_index(tmp_path: Path, pg_url: str) -> None:
    """A database made by the first release keeps its rows through every later migration."""
    from alembic import command
    from sqlalchemy import create_engine as sa_engine

    from hubproxy.db.engine import alembic_config

    for url in (f"sqlite:///{tmp_path / 'old.db'}", pg_url):
        engine = sa_engine(normalize_url(url))
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
            conn.execute(text('INSERT INTO files (repo_type, repo_id, "commit", path, blob, size, is_lfs, fetched_at) '
                              "VALUES ('model', 'a/b', :c, 'w.bin', :k, 5, true, 0)"), {"c": "c" * 40, "k": "d" * 64})
            conn.execute(text("INSERT INTO blobs (key, size, created_at) VALUES (:k, 5, 123)"), {"k": "d" * 64})
        engine.dispose()
        engine = make_engine(url)
        assert schema_revision(engine) == head_revision()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT path FROM entries WHERE kind = 'file'")).scalar_one() == "w.bin"
            assert conn.execute(text("SELECT last_access, hits FROM blobs")).one() == (123.0, 0)
        engine.dispose()
