"""A hubproxy whose upstream is another hubproxy."""

from __future__ import annotations

import hashlib
from pathlib import Path

from huggingface_hub import hf_hub_download, snapshot_download

from tests.fakehub import FakeHub


def test_chain_of_two(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    outer = make_proxy()
    inner = make_proxy(upstream=outer.url, token=None)
    repo = fakehub.repos[("model", "alice/tiny-gpt2-sharded")]
    files = {p: f.blob.data for p, f in repo.commits[repo.branches["main"]].files.items()}
    fakehub.reset_counts()
    folder = Path(snapshot_download("alice/tiny-gpt2-sharded", endpoint=inner.url, cache_dir=tmp_path / "a"))
    assert {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    served_once = dict(fakehub.blob_bytes)
    # Through the outer one directly, and through the inner one again: the upstream sends nothing more.
    snapshot_download("alice/tiny-gpt2-sharded", endpoint=outer.url, cache_dir=tmp_path / "b")
    local = hf_hub_download("alice/tiny-gpt2-sharded", "config.json", endpoint=inner.url, cache_dir=tmp_path / "c")
    assert Path(local).read_bytes() == files["config.json"]
    assert dict(fakehub.blob_bytes) == served_once
    shard = next(p for p in files if p.endswith(".safetensors"))
    assert served_once[hashlib.sha256(files[shard]).hexdigest()] == len(files[shard])
