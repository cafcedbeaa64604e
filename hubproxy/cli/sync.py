"""``hubproxy sync ...``: the options of air-gapped bundle commands (they run in ``hubproxy.sync.command``)."""

from __future__ import annotations

import argparse

from hubproxy.cli.common import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sync = sub.add_parser("sync", help="air-gapped bundles: export, import, verify")
    sync_sub = sync.add_subparsers(dest="sync_command", required=True)

    def cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        p = add_command(sync_sub, name, help_text, "store, database, upstream, keys", "cache and database folder")
        p.add_argument("--plain", action="store_true", help="log lines instead of progress bars, even on a terminal")
        return p

    exp = cmd("export", "fetch repos (through the upstream, reusing the local cache) into a bundle")
    exp.add_argument("--repo", action="append", default=[], help="[TYPE:]ORG/NAME[@REVISION] (repeatable)")
    exp.add_argument("--repo-type", choices=["model", "dataset", "space"], default="model",
                     help="type of repos given without a TYPE: prefix")
    exp.add_argument("--repos-file", help="a file with one repo spec per line")
    exp.add_argument("--include", action="append", default=[], help="glob of paths to carry (repeatable)")
    exp.add_argument("--exclude", action="append", default=[], help="glob of paths to leave out (repeatable)")
    exp.add_argument("--since", help="a previous bundle (or its manifest.json): carry only the blobs it lacks")
    exp.add_argument("--source", help="hub or hubproxy URL to export from (default: the configured upstream)")
    exp.add_argument("--out", required=True, help="bundle to write: a new directory, or NAME.tar")
    imp = cmd("import", "load a bundle into this hubproxy's store and index")
    imp.add_argument("bundle")
    imp.add_argument("--no-pin", action="store_true", help="let eviction remove the imported revisions")
    ver = cmd("verify", "check a bundle (checksum, signature, every blob's hash) without importing it")
    ver.add_argument("bundle")
    key = sync_sub.add_parser("keygen", help="make an ed25519 key pair for signing bundles")
    key.add_argument("prefix", help="writes PREFIX.key (private) and PREFIX.pub")
