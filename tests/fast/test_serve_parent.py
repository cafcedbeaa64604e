"""The parent of several server workers loads only the serve command, not the rest of the CLI."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from hubproxy.cli import _parser
from hubproxy.cli.serve import run
from hubproxy.http_protocol import HubproxyHttpProtocol
_parser(("serve",)).parse_args(["serve", "--workers", "2"])
heavy = sorted(m for m in ("sqlalchemy", "aiohttp", "hubproxy.admin.service", "hubproxy.app") if m in sys.modules)
print(",".join(heavy))
"""


def test_the_serve_parent_does_not_load_the_database_or_the_app() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_other_commands_are_still_offered() -> None:
    out = subprocess.run([sys.executable, "-m", "hubproxy", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "{serve,cache,admin,sync,db}" in out
