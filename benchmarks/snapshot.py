"""The repo rows: a whole model repo fetched by huggingface_hub's ``snapshot_download``, as users first pull one.

The repo is laid out like a sentence-transformers model on the Hub: twelve small files (configs, a
tokenizer, a vocabulary, a README) and three weight files in three formats. ``snapshot_download`` lists the
repo, then fetches eight files at a time, each with a HEAD and a GET: the figure is the whole command's time
through hubproxy (cold: a fresh hubproxy; hot: everything stored) against the same command straight from
the fake hub. Its per-file requests, the small files' latency and the concurrency all count, not only
bulk bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Path in the repo -> size in bytes (``config.json`` first: the rows' metadata warm-up fetches it).
LAYOUT = {
    "config.json": 700, "tokenizer.json": 700_000, "tokenizer_config.json": 1_200,
    "special_tokens_map.json": 300, "vocab.txt": 230_000, "README.md": 9_000, "modules.json": 350,
    "sentence_bert_config.json": 60, "config_sentence_transformers.json": 200, "1_Pooling/config.json": 300,
    "data_config.json": 30_000, "train_script.py": 13_000,
}
WEIGHTS = ("model.safetensors", "onnx/model.onnx", "pytorch_model.bin")

SNAPSHOT = """
import sys, time
from huggingface_hub import snapshot_download
t = time.monotonic()
snapshot_download(sys.argv[1], cache_dir=sys.argv[2])
print(time.monotonic() - t)
"""


def make_repo(folder: Path, weight_mib: int) -> dict[str, Path]:
    """Write the repo's files (random bytes) under ``folder``; returns repo path -> local file."""
    folder.mkdir(parents=True, exist_ok=True)
    served = {}
    sizes = {**LAYOUT, **{name: weight_mib * 1024 * 1024 for name in WEIGHTS}}
    for name, size in sizes.items():
        local = folder / name.replace("/", "_")
        with open(local, "wb") as f:
            for start in range(0, size, 1024 * 1024):
                f.write(os.urandom(min(1024 * 1024, size - start)))
        served[name] = local
    return served


def snapshot_time(endpoint: str, repo: str, cache_dir: Path) -> float:
    """Seconds for ``snapshot_download`` of ``repo`` from ``endpoint`` into an empty cache (Python's start and
    imports not counted), with huggingface_hub's default eight workers and plain HTTP (no Xet)."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    try:
        out = subprocess.run([sys.executable, "-c", SNAPSHOT, repo, str(cache_dir)], env=env, capture_output=True,
                             text=True, check=True).stdout
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return float(out.split()[-1])
