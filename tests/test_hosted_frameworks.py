"""transformers and datasets push to hosted repos and load back from them, unchanged, in their own processes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import AdminClient, admin_json, client_env, run_client

PUSH_MODEL = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model.push_to_hub("alice/tiny", private=True)
tok.push_to_hub("alice/tiny")
ids = tok("hello world", return_tensors="pt").input_ids
with torch.no_grad():
    print(json.dumps(float(model(ids).logits.double().sum())))
"""

LOAD_MODEL = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("alice/tiny")
tok = AutoTokenizer.from_pretrained("alice/tiny")
ids = tok("hello world", return_tensors="pt").input_ids
with torch.no_grad():
    print(json.dumps(float(model(ids).logits.double().sum())))
"""

PUSH_DATASET = r"""
from datasets import Dataset
Dataset.from_dict({"text": [f"row {i}" for i in range(500)], "label": list(range(500))}).push_to_hub(
    "alice/rows", private=True)
"""

LOAD_DATASET = r"""
import json
from datasets import load_dataset
rows = load_dataset("alice/rows", split="train")
print(json.dumps([len(rows), rows[0], rows[499]]))
"""


def _alice(make_proxy) -> tuple:  # noqa: ANN001
    proxy = make_proxy(anonymous_access="off", token_cache_seconds="0")
    rest = AdminClient(proxy.url, admin_json(proxy.data_dir, "bootstrap")["token"])
    rest.call("POST", "/users", {"name": "alice"})
    return proxy, rest.call("POST", "/tokens", {"user": "alice", "role": "write"})["token"]


def test_transformers_push_then_load_from_a_fresh_cache(make_proxy, model_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """push_to_hub with the default client (hf_xet installed: files go inline), from_pretrained elsewhere."""
    proxy, token = _alice(make_proxy)
    pushed = run_client("", client_env(proxy.url, tmp_path / "push", token),
                        args=["python", "-c", PUSH_MODEL, str(model_dir)], timeout=400)
    loaded = run_client("", client_env(proxy.url, tmp_path / "fresh", token), args=["python", "-c", LOAD_MODEL],
                        timeout=400)
    assert json.loads(pushed.stdout.splitlines()[-1]) == json.loads(loaded.stdout.splitlines()[-1])


def test_datasets_push_then_load(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    """datasets.push_to_hub with HF_HUB_DISABLE_XET=1 (its parquet shards go over LFS), then load_dataset."""
    proxy, token = _alice(make_proxy)
    run_client("", client_env(proxy.url, tmp_path / "push", token, HF_HUB_DISABLE_XET="1"),
               args=["python", "-c", PUSH_DATASET], timeout=400)
    out = run_client("", client_env(proxy.url, tmp_path / "load", token), args=["python", "-c", LOAD_DATASET],
                     timeout=400)
    assert json.loads(out.stdout.splitlines()[-1]) == [500, {"text": "row 0", "label": 0},
                                                       {"text": "row 499", "label": 499}]
