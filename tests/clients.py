"""Other client releases, each in a virtual environment of its own, made once and kept under .cache/.

The suite's own environment has the current huggingface_hub; these give the releases users still run
(0.36, the last ``requests``-based one, which transformers 4.x pins) for the tests that must check them.
"""

from __future__ import annotations

import fcntl
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / ".cache" / "clients"


def client_python(*requirements: str) -> Path:
    """The Python of a virtual environment with exactly these requirements installed (pip specifiers)."""
    name = re.sub(r"[^A-Za-z0-9.]+", "-", "_".join(requirements)).strip("-")
    venv = CLIENTS / name
    python = venv / "bin" / "python"
    CLIENTS.mkdir(parents=True, exist_ok=True)
    with open(CLIENTS / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test processes build it once
        if not (venv / ".ready").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True, timeout=900)
            (venv / ".ready").write_text("\n".join(requirements))
    return python
