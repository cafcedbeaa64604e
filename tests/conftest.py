"""Shared fixtures: the fake upstream (real HTTP), its content, and hubproxy processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from sqlalchemy import create_engine, text

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")

from hubproxy.db import normalize_url  # noqa: E402
from tests.fakehub import FakeHub, Faults  # noqa: E402
from tests.fixtures import add_common_repos, folder_files, make_tiny_model  # noqa: E402
from tests.helpers import ProxyProcess, free_port  # noqa: E402

UPSTREAM_TOKEN = "hf_upstream_secret_token"
PG_BASE = os.environ.get("HUBPROXY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards."""
    schema = f"hp_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(PG_BASE), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_BASE} is needed for this test: {exc}")
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _shared_model(tmp_path_factory: pytest.TempPathFactory, name: str, shard: bool = False) -> Path:
    """A tiny model made once per test run, whatever the number of xdist workers (they share the folder)."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    out = root / "shared-models" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = out.parent / f"{name}.done"
        if not done.exists():
            make_tiny_model(out, shard=shard)
            done.touch()
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _shared_model(tmp_path_factory, "tiny-gpt2")


@pytest.fixture(scope="session")
def fakehub(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    hub = FakeHub(page_size=3, token=UPSTREAM_TOKEN)
    hub.add_commit("model", "alice/tiny-gpt2", folder_files(model_dir))
    sharded = _shared_model(tmp_path_factory, "tiny-gpt2-sharded", shard=True)
    hub.add_commit("model", "alice/tiny-gpt2-sharded", folder_files(sharded))
    add_common_repos(hub)
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture(autouse=True)
def _reset_fakehub(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "fakehub" in request.fixturenames:
        hub: FakeHub = request.getfixturevalue("fakehub")
        hub.faults = Faults()
        hub.throttle_bps = None


@pytest.fixture
def make_proxy(request: pytest.FixtureRequest, tmp_path: Path, fakehub: FakeHub) -> Iterator[Callable[..., ProxyProcess]]:
    """Start hubproxy processes in front of the fake hub; all are stopped after the test. A test's ``pg_url`` is
    set up first, so its schema is dropped only once every process is stopped (dropped under a running replica,
    the ``DROP SCHEMA`` deadlocks with the replica's queries), whatever order the test names them in."""
    if "pg_url" in request.fixturenames:
        request.getfixturevalue("pg_url")
    started: list[ProxyProcess] = []

    def make(data_dir: Path | None = None, upstream: str | None = None, args: list[str] | None = None,
             token: str | None = UPSTREAM_TOKEN, port: int | None = None, process_env: dict[str, str] | None = None,
             **env: str) -> ProxyProcess:
        """``env``: settings (as HUBPROXY_* variables); ``process_env``: other variables (HTTPS_PROXY, ...)."""
        full_env = {f"HUBPROXY_{k.upper()}": str(v) for k, v in env.items()}
        full_env.update(process_env or {})
        if token:
            full_env["HUBPROXY_UPSTREAM_TOKEN"] = token
        proxy = ProxyProcess(data_dir or tmp_path / f"data{len(started)}", upstream or fakehub.url,
                             full_env, args, port, log_dir=tmp_path)
        started.append(proxy)
        return proxy.start()

    yield make
    for proxy in started:  # all at once: each takes a moment to drain and exit
        proxy.terminate()
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(make_proxy: Callable[..., ProxyProcess], fakehub: FakeHub) -> ProxyProcess:
    p = make_proxy()
    fakehub.reset_counts()
    return p


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> tuple[str, object]:
    name = f"hubproxy-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name, client
