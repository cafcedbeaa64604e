"""A standalone fake hub, for benchmarks and manual tries: ``python -m tests.fakehub --file REPO:PATH=FILE``."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tests.fakehub.server import FakeHub

ap = argparse.ArgumentParser()
ap.add_argument("--file", action="append", default=[], help="REPO:PATH=LOCALFILE to serve")
ap.add_argument("--throttle", type=float, default=None, help="bytes/s per connection")
args = ap.parse_args()
fake = FakeHub(page_size=1000)
fake.throttle_bps = args.throttle
for spec in args.file:
    target, local = spec.split("=", 1)
    repo, path = target.split(":", 1)
    fake.add_commit("model", repo, {path: Path(local)})
fake.start()
print(json.dumps({"url": fake.url, "cdn_url": fake.cdn_url}), flush=True)
try:
    while True:
        time.sleep(3600)
except KeyboardInterrupt:
    pass
os._exit(0)
