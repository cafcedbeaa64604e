"""transformers and datasets, unchanged, in their own processes, through hubproxy."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakehub import FakeHub
from tests.helpers import ProxyProcess, client_env, run_client

LOAD_MODEL = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tok = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tok("hello world", return_tensors="pt").input_ids
with torch.no_grad():
    logits = model(ids).logits
print(json.dumps({"ids": ids[0].tolist(), "sum": float(logits.sum()),
                  "params": {k: float(v.double().sum()) for k, v in model.state_dict().items()}}))
"""


def _reference(model_dir: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    return {"ids": ids[0].tolist(), "sum": float(logits.sum()),
            "params": {k: float(v.double().sum()) for k, v in model.state_dict().items()}}


def test_transformers_from_pretrained(proxy: ProxyProcess, fakehub: FakeHub, model_dir: Path, tmp_path: Path) -> None:
    env = client_env(proxy.url, tmp_path / "hf")
    ref = _reference(model_dir)
    for repo in ("alice/tiny-gpt2", "alice/tiny-gpt2-sharded"):
        out = json.loads(_run(env, repo))
        assert out["ids"] == ref["ids"]
        if repo == "alice/tiny-gpt2":
            assert out["params"] == ref["params"] and abs(out["sum"] - ref["sum"]) < 1e-3
    # The negative cache worked (D8): optional files were answered EntryNotFound with X-Repo-Commit.
    no_exist = list((tmp_path / "hf" / "hub" / "models--alice--tiny-gpt2" / ".no_exist").rglob("*"))
    assert no_exist
    assert fakehub.count(contains="xet") == 0
    # A warm load through a stopped upstream still works: hubproxy answers from its cache.
    fakehub.stop()
    try:
        out = json.loads(_run(client_env(proxy.url, tmp_path / "hf2"), "alice/tiny-gpt2"))
        assert out["params"] == ref["params"]
    finally:
        fakehub.restart()


def _run(env: dict[str, str], repo: str) -> str:
    import sys

    return run_client("", env, args=[sys.executable, "-c", LOAD_MODEL, repo]).stdout.strip().splitlines()[-1]


LOAD_DATASET = """
import json, sys
from datasets import load_dataset
ds = load_dataset(sys.argv[1], split="train")
print(json.dumps({"rows": ds.to_list()}))
"""


def test_datasets_load_dataset(proxy: ProxyProcess, fakehub: FakeHub, tmp_path: Path) -> None:
    import sys

    env = client_env(proxy.url, tmp_path / "hf")
    res = run_client("", env, args=[sys.executable, "-c", LOAD_DATASET, "alice/tiny-ds"])
    rows = json.loads(res.stdout.strip().splitlines()[-1])["rows"]
    assert rows == [{"text": "hello world", "label": 0}, {"text": "the quick brown fox", "label": 1},
                    {"text": "jumps over the lazy dog", "label": 0}, {"text": "hubproxy serves models", "label": 1}]
