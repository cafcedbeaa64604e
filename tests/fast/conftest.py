"""Fixtures of the fast tier: hubproxy's app in process, a fake hub without real models, SQLite in a temp folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from hubproxy.db import make_engine
from tests.conftest import UPSTREAM_TOKEN
from tests.fakehub import FakeHub
from tests.fast.inprocess import InProcessHub
from tests.fixtures import add_common_repos


@pytest.fixture(scope="session")
def fakehub() -> Iterator[FakeHub]:
    """The fake upstream with the repos the fast tier reads (no transformers model: no torch to import)."""
    hub = FakeHub(page_size=3, token=UPSTREAM_TOKEN)
    add_common_repos(hub)
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture
def make_app(tmp_path: Path, fakehub: FakeHub) -> Iterator[Callable[..., InProcessHub]]:
    """Start hubproxy apps in process (settings as keyword arguments); all are closed after the test."""
    started: list[InProcessHub] = []

    def make(**settings: str) -> InProcessHub:
        settings.setdefault("upstream_token", UPSTREAM_TOKEN)
        hub = InProcessHub(tmp_path / f"data{len(started)}", settings.pop("upstream", fakehub.url), **settings)
        started.append(hub)
        return hub

    yield make
    for hub in started:
        hub.close()


@pytest.fixture
def app(make_app: Callable[..., InProcessHub], fakehub: FakeHub) -> InProcessHub:
    """One hubproxy app with default settings; the fake hub's request log starts empty."""
    hub = make_app()
    fakehub.reset_counts()
    return hub


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    yield eng
    eng.dispose()
