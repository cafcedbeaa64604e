"""A single-node install has no S3, PostgreSQL or signing libraries: asking for them fails in one clear line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from hubproxy.config import ConfigError, Settings
from hubproxy.db import make_engine
from hubproxy.store import make_store
from hubproxy.sync.manifest import BundleError, generate_keypair


def _without(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in names else real(n, *a))


def test_missing_extras_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _without(monkeypatch, "boto3", "psycopg", "cryptography")
    monkeypatch.delitem(sys.modules, "hubproxy.store.s3", raising=False)
    with pytest.raises(ConfigError, match=r"hubproxy\[s3\]"):
        make_store(Settings(store="s3", s3_bucket="b", data_dir=tmp_path))
    with pytest.raises(ConfigError, match=r"hubproxy\[postgres\]"):
        make_engine("postgresql://127.0.0.1/test")
    with pytest.raises(BundleError, match=r"hubproxy\[signing\]"):
        generate_keypair(tmp_path / "k")
