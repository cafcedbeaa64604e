"""transformers and datasets, unchanged, in their own processes, through hubproxy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fakehub import FakeHub
from tests.helpers import ROOT, ProxyProcess, client_env, run_client

LOAD_MODELS = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
for line in sys.stdin:
    repo, cache = json.loads(line)
    model = AutoModelForCausalLM.from_pretrained(repo, cache_dir=cache)
    tok = AutoTokenizer.from_pretrained(repo, cache_dir=cache)
    ids = tok("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    print(json.dumps({"ids": ids[0].tolist(), "sum": float(logits.sum()),
                      "params": {k: float(v.double().sum()) for k, v in model.state_dict().items()}}), flush=True)
"""


class ModelLoader:
    """transformers, unchanged, in a client process of its own that loads models when asked (torch is imported once).

    ``env`` points it at an endpoint (``client_env``); each load names its own cache folder.
    """

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._stderr = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", LOAD_MODELS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=env, text=True, cwd=ROOT)

    def load(self, repo: str, cache: Path) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([repo, str(cache)]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"loading {repo} failed:\n{self.log.read_text()[-6000:]}")
        return json.loads(line)

    def __enter__(self) -> ModelLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._stderr.close()


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
    ref = _reference(model_dir)
    with ModelLoader(client_env(proxy.url, tmp_path / "hf"), tmp_path / "client.log") as client:
        for repo in ("alice/tiny-gpt2", "alice/tiny-gpt2-sharded"):
            out = client.load(repo, tmp_path / "hf" / "hub")
            assert out["ids"] == ref["ids"]
            if repo == "alice/tiny-gpt2":
                assert out["params"] == ref["params"] and abs(out["sum"] - ref["sum"]) < 1e-3
        # The negative cache worked: optional files were answered EntryNotFound with X-Repo-Commit.
        no_exist = list((tmp_path / "hf" / "hub" / "models--alice--tiny-gpt2" / ".no_exist").rglob("*"))
        assert no_exist
        assert fakehub.count(contains="xet") == 0
        # A load into an empty client cache through a stopped upstream still works: hubproxy answers from its cache.
        fakehub.stop()
        try:
            assert client.load("alice/tiny-gpt2", tmp_path / "hf2")["params"] == ref["params"]
        finally:
            fakehub.restart()


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
