"""``hubproxy sync ...``: the command line of bundles."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from hubproxy.config import ConfigError, load_settings
from hubproxy.progress import human_bytes
from hubproxy.sync.manifest import BundleError, generate_keypair


def sync_command(args: argparse.Namespace) -> int:
    cmd = args.sync_command
    if cmd == "keygen":
        try:
            private, public, kid = generate_keypair(Path(args.prefix))
        except FileExistsError as exc:
            print(f"hubproxy sync keygen: {exc.filename} exists; choose another prefix", file=sys.stderr)
            return 1
        print(f"key {kid}: private {private} (set sync_signing_key), public {public} (set sync_trusted_keys)")
        return 0
    try:
        settings = load_settings(args.config, {"data_dir": args.data_dir})
    except ConfigError as exc:
        print(f"hubproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if cmd == "export":
            return _export(args, settings)
        from hubproxy.sync.importer import Importer, verify

        if cmd == "verify":
            summary = verify(Path(args.bundle), settings, progress_plain=args.plain)
            verb = "verified"
        else:
            summary = Importer(settings, pin=not args.no_pin, progress_plain=args.plain).run(Path(args.bundle))
            verb = "imported"
    except BundleError as exc:
        print(f"hubproxy sync {cmd}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary.as_dict(), indent=1))
    else:
        stored = f", {summary.blobs_stored} stored, {summary.blobs_skipped} already present" if verb == "imported" else ""
        base = f"; {summary.from_base} blob(s) come from its base bundle" if summary.from_base else ""
        print(f"{verb} {summary.bundle}: {len(summary.repos)} repos ({', '.join(summary.repos)}), "
              f"{summary.files} files, {summary.blobs} blobs{stored}, {human_bytes(summary.bytes)} "
              f"in {summary.seconds:.1f}s{base}; manifest {summary.checksum}"
              f"{', signed by key ' + summary.signed_by if summary.signed_by else ', unsigned'}")
    return 0


def _export(args: argparse.Namespace, settings) -> int:  # noqa: ANN001
    from hubproxy.sync.export import Exporter, parse_spec, read_repos_file

    specs = [parse_spec(text, args.repo_type) for text in args.repo]
    if args.repos_file:
        specs += read_repos_file(Path(args.repos_file), args.repo_type)
    exporter = Exporter(settings, args.source, args.include, args.exclude, progress_plain=args.plain)
    summary = asyncio.run(exporter.run(specs, Path(args.out), Path(args.since) if args.since else None))
    if args.json:
        print(json.dumps(summary.as_dict(), indent=1))
    else:
        print(f"exported {summary.repos} repos, {summary.files} files: {summary.blobs_written} blobs "
              f"({human_bytes(summary.bytes_written)}) written to {args.out}"
              f"{f', {summary.blobs_in_base} left to the base bundle' if summary.blobs_in_base else ''} "
              f"in {summary.seconds:.1f}s; manifest {summary.checksum}"
              f"{', signed by key ' + summary.signed_by if summary.signed_by else ', unsigned'}")
    return 0
