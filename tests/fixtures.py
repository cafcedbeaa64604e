"""Content for the fake upstream: a tiny transformers model, a parquet dataset, odd files."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fakehub import FakeHub

TEXT = ["hello world", "the quick brown fox", "jumps over the lazy dog", "hubproxy serves models"]


def make_tiny_model(out: Path, shard: bool = False) -> Path:
    """A 1-layer GPT-2 with random weights and an in-process trained tokenizer, saved for real."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(TEXT * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    config = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="60KB" if shard else "5GB")
    tokenizer.save_pretrained(out)
    return out


def folder_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)).replace(os.sep, "/"): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def make_parquet_dataset() -> dict[str, bytes]:
    """A dataset repo with a README ``configs`` block and one parquet shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": TEXT, "label": [0, 1, 0, 1]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    readme = ("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
              "    path: data/train-*\n---\n# tiny-ds\n")
    return {"README.md": readme.encode(), "data/train-00000-of-00001.parquet": buf.getvalue()}


def odd_files() -> dict[str, bytes]:
    """Small and LFS files, a sub-folder, a space and non-ASCII characters, a 0-byte file."""
    rnd = os.urandom
    return {
        "config.json": json.dumps({"model_type": "none", "hidden": 8}).encode(),
        "README.md": b"# files\n",
        "sub dir/notes \u00e9.txt": "caf\u00e9 notes\n".encode(),
        "sub dir/deeper/a.txt": b"a" * 100,
        "empty.txt": b"",
        "weights.bin": rnd(3 * 1024 * 1024 + 17),
        "model.safetensors": rnd(256 * 1024),
    }


def add_common_repos(hub: FakeHub) -> None:
    """The repos both tiers read besides the real models: odd files, a canonical name, a dataset, a space,
    a gated and a private repo."""
    hub.add_commit("model", "alice/files", odd_files())
    hub.add_commit("model", "gpt2", {"config.json": b'{"canonical": true}'})
    hub.add_commit("dataset", "alice/tiny-ds", make_parquet_dataset())
    hub.add_commit("space", "alice/demo", {"app.py": b"print('hi')\n", "README.md": b"# demo\n"})
    hub.add_commit("model", "alice/gated", {"config.json": b"{}", "model.safetensors": os.urandom(4096)}, gated=True)
    hub.add_commit("model", "alice/private", {"config.json": b"{}"}, private=True)
