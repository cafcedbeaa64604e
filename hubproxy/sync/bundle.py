"""Bundle files: a directory, or one uncompressed ``.tar`` (the blobs do not compress).

Layout either way::

    manifest.json           the table of contents (see manifest.py), written last
    blobs/<ab>/<key>        each blob once, named by its hash

A bundle being written has no manifest yet (a directory) or a ``.part`` name (a tar), so a
half-written bundle is never mistaken for a whole one.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from hubproxy.store.base import BlobHasher
from hubproxy.sync.manifest import MANIFEST_NAME, BundleError, Manifest, blob_member

CHUNK = 4 * 1024 * 1024


def is_tar(path: Path) -> bool:
    return path.suffix == ".tar"


class BundleWriter:
    """Writes blobs, then the manifest; ``close`` makes the bundle whole."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.tar = is_tar(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise BundleError(f"{out} already exists; choose a new name for the bundle")
        if self.tar:
            self._part = out.with_name(out.name + ".part")
            self._staging = out.with_name(out.name + ".staging")
            self._staging.mkdir(parents=True, exist_ok=True)
            self._tarfile: tarfile.TarFile | None = tarfile.open(self._part, "w", format=tarfile.PAX_FORMAT)
        else:
            out.mkdir(parents=True, exist_ok=True)
            self._staging = out
            self._tarfile = None

    def staging_file(self, key: str) -> Path:
        """Where a blob is written while it is fetched and hashed."""
        path = self._staging / (blob_member(key) + ".part")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add_blob(self, key: str, staged: Path) -> None:
        """Take a verified staged blob into the bundle."""
        if self._tarfile is not None:
            info = tarfile.TarInfo(blob_member(key))
            info.size = staged.stat().st_size
            info.mtime = int(time.time())
            info.mode = 0o644
            with staged.open("rb") as src:
                self._tarfile.addfile(info, src)
            staged.unlink()
        else:
            staged.replace(self.out / blob_member(key))

    def close(self, manifest: Manifest) -> None:
        raw = manifest.to_bytes()
        if self._tarfile is not None:
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size = len(raw)
            info.mtime = int(time.time())
            info.mode = 0o644
            self._tarfile.addfile(info, io.BytesIO(raw))
            self._tarfile.close()
            self._tarfile = None
            with open(self._part, "rb+") as f:
                os.fsync(f.fileno())
            self._part.replace(self.out)
            shutil.rmtree(self._staging, ignore_errors=True)
        else:
            tmp = self.out / (MANIFEST_NAME + ".part")
            with open(tmp, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.out / MANIFEST_NAME)

    def abort(self) -> None:
        """Leave nothing that looks like a bundle."""
        if self._tarfile is not None:
            with contextlib.suppress(Exception):
                self._tarfile.close()
            self._tarfile = None
            with contextlib.suppress(FileNotFoundError):
                self._part.unlink()
            shutil.rmtree(self._staging, ignore_errors=True)


class BundleReader:
    """Reads a bundle directory or tar: the manifest and each blob."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if not path.exists():
            raise BundleError(f"{path}: no such bundle")
        if path.is_dir():
            if not (path / MANIFEST_NAME).is_file():
                raise BundleError(f"{path}: no {MANIFEST_NAME} (not a bundle, or its export did not finish)")
        else:
            try:
                self._tar = tarfile.open(path, "r:")
                self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise BundleError(f"{path}: not a readable tar ({exc})") from None
            if MANIFEST_NAME not in self._members:
                raise BundleError(f"{path}: no {MANIFEST_NAME} in the tar (truncated, or not a bundle)")

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def manifest(self) -> Manifest:
        with self._open(MANIFEST_NAME) as f:
            return Manifest.from_bytes(f.read())

    def has(self, member: str) -> bool:
        if self._tar is not None:
            return member in self._members
        return (self.path / member).is_file()

    @contextlib.contextmanager
    def _open(self, member: str) -> Iterator[IO[bytes]]:
        if self._tar is not None:
            info = self._members.get(member)
            f = self._tar.extractfile(info) if info is not None else None
            if f is None:
                raise BundleError(f"{self.path}: {member} is missing")
            with f:
                yield f
        else:
            try:
                f = open(self.path / member, "rb")  # noqa: SIM115 - closed by the with below
            except FileNotFoundError:
                raise BundleError(f"{self.path}: {member} is missing") from None
            with f:
                yield f

    def read_blob(self, key: str, size: int, sink: Callable[[bytes], None] | None = None,
                  progress: Callable[[int], None] | None = None) -> None:
        """Stream a blob to ``sink`` while checking its size and hash; raise naming the member if bad.

        The last chunk reaches ``sink`` only after the hash matched, so a sink that commits on the
        last byte never commits bad data.
        """
        member = blob_member(key)
        hasher = BlobHasher(key, size)
        seen = 0
        held: bytes | None = None
        try:
            with self._open(member) as f:
                while chunk := f.read(CHUNK):
                    seen += len(chunk)
                    if seen > size:
                        raise BundleError(f"{self.path}: {member} is longer than the {size} bytes the manifest says")
                    hasher.update(chunk)
                    if held is not None and sink is not None:
                        sink(held)
                    held = chunk
                    if progress is not None:
                        progress(len(chunk))
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BundleError(f"{self.path}: {member} cannot be read ({exc})") from None
        if seen != size:
            raise BundleError(f"{self.path}: {member} is truncated ({seen} of {size} bytes)")
        if hasher.hexdigest() != key:
            raise BundleError(f"{self.path}: {member} is corrupt (its content does not match its hash)")
        if held is not None and sink is not None:
            sink(held)
