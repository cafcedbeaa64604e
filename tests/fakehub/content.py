"""What the fake hub serves: repos, their commits and files, the blobs' bytes, and the faults to inject."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".gguf", ".pt", ".h5", ".onnx", ".msgpack")
LFS_MIN_SIZE = 1024 * 1024
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Blob:
    """File content: bytes in memory, or a file on disk (large benchmark files)."""

    data: bytes | None = None
    path: Path | None = None
    size: int = 0
    sha256: str = ""
    sha1: str = ""

    @classmethod
    def of(cls, content: bytes | Path) -> Blob:
        if isinstance(content, Path):
            h256 = hashlib.sha256()
            size = content.stat().st_size
            h1 = hashlib.sha1(b"blob %d\0" % size)
            with open(content, "rb") as f:
                while chunk := f.read(8 << 20):
                    h256.update(chunk)
                    h1.update(chunk)
            return cls(path=content, size=size, sha256=h256.hexdigest(), sha1=h1.hexdigest())
        return cls(data=content, size=len(content), sha256=hashlib.sha256(content).hexdigest(), sha1=git_sha1(content))

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(end - start)


@dataclass
class RepoFile:
    blob: Blob
    lfs: bool

    def pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.blob.sha256}\n"
                f"size {self.blob.size}\n").encode()

    @property
    def etag(self) -> str:
        return self.blob.sha256 if self.lfs else self.blob.sha1


@dataclass
class Commit:
    sha: str
    title: str
    files: dict[str, RepoFile]
    date: str
    parent: str | None


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    private: bool = False


@dataclass
class Faults:
    """Per-blob fault injection (keyed by the blob's sha256 or git sha1)."""

    fail_next: dict[str, int] = field(default_factory=dict)  # answer 500 this many times
    drop_after: dict[str, list[int]] = field(default_factory=dict)  # [offset, times]: cut a body that spans it
    corrupt: set[str] = field(default_factory=set)  # flip a byte in the middle
    corrupt_next: dict[str, int] = field(default_factory=dict)  # flip it in this many bodies only
    trickle: dict[str, tuple[int, float]] = field(default_factory=dict)  # (chunk bytes, delay seconds)
    ignore_range: set[str] = field(default_factory=set)  # answer 200 with the whole body to a Range
    metadata_delay: float = 0.0  # seconds to sleep before every /api answer
    answer_delay: dict[str, float] = field(default_factory=dict)  # seconds before a ranged answer's status line
    opaque_etag: set[str] = field(default_factory=set)  # regular files answered with an ETag that is no hash
    # After this many more CDN answers for a blob, the CDN links issued so far expire (403); resolve hands out new ones.
    cdn_expires: dict[str, int] = field(default_factory=dict)
