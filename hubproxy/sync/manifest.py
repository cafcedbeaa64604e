"""The bundle manifest: what repos a bundle carries, its checksum and its ed25519 signature.

The checksum and the signature both cover the manifest's canonical JSON form (sorted keys, no
whitespace) without the ``checksum`` and ``signature`` fields, so a reader recomputes both from
the file alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubproxy.store.base import is_blob_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def _crypto() -> Any:
    """The ``cryptography`` modules signatures need (the ``signing`` extra), or a clear error without them."""
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BundleError("signed bundles need the 'signing' extra: pip install 'hubproxy[signing]'") from None
    return exceptions, serialization, ed25519

FORMAT = "hubproxy-bundle"
VERSION = 1
MANIFEST_NAME = "manifest.json"


class BundleError(Exception):
    """The bundle is damaged, incomplete, untrusted or asks for something impossible; the message says what."""


def blob_member(key: str) -> str:
    """Where a blob lives inside a bundle."""
    return f"blobs/{key[:2]}/{key}"


@dataclass
class FileEntry:
    """One file of a repo revision: the blob that holds it."""

    path: str
    blob: str
    size: int
    lfs: bool

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "blob": self.blob, "size": self.size, "lfs": self.lfs}


@dataclass
class RepoEntry:
    """A repo at a revision, with every metadata answer needed to serve it offline."""

    repo_type: str
    repo_id: str
    revision: str
    commit: str
    info: dict[str, Any]
    tree: list[dict[str, Any]]
    refs: dict[str, Any] | None
    files: list[FileEntry]
    #: The commit as the source's history shows it (title, message, authors, date), when it gives one.
    commit_info: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.repo_type} {self.repo_id}@{self.revision}"

    def as_dict(self) -> dict[str, Any]:
        return {"repo_type": self.repo_type, "repo_id": self.repo_id, "revision": self.revision,
                "commit": self.commit, "info": self.info, "tree": self.tree, "refs": self.refs,
                "files": [f.as_dict() for f in self.files],
                **({"commit_info": self.commit_info} if self.commit_info is not None else {})}


@dataclass
class Manifest:
    """A bundle's table of contents."""

    repos: list[RepoEntry]
    #: Blobs carried in this bundle, key -> size.
    blobs: dict[str, int]
    created_at: str
    source: str
    #: Checksum of the manifest an incremental bundle builds on (its blobs are not carried again).
    base: str | None = None
    checksum: str | None = None
    signature: dict[str, str] | None = field(default=None)

    def body(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "created_at": self.created_at, "source": self.source,
                "base": self.base, "repos": [r.as_dict() for r in self.repos],
                "blobs": dict(sorted(self.blobs.items()))}

    def canonical(self) -> bytes:
        return json.dumps(self.body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def compute_checksum(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical()).hexdigest()

    def seal(self, signing_key: Ed25519PrivateKey | None) -> None:
        """Set the checksum, and sign with ``signing_key`` if there is one."""
        self.checksum = self.compute_checksum()
        self.signature = None
        if signing_key is not None:
            public = signing_key.public_key()
            self.signature = {"algorithm": "ed25519", "key_id": key_id(public),
                              "value": base64.b64encode(signing_key.sign(self.canonical())).decode()}

    def to_bytes(self) -> bytes:
        data = self.body()
        data["checksum"] = self.checksum
        data["signature"] = self.signature
        return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"

    def referenced_blobs(self) -> dict[str, int]:
        """Every blob some file of some repo needs, key -> size."""
        return {f.blob: f.size for r in self.repos for f in r.files}

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        """Parse and check the structure and the checksum (not the signature: see ``check_signature``)."""
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise BundleError(f"{MANIFEST_NAME}: not a hubproxy bundle manifest")
            if data.get("version") != VERSION:
                raise BundleError(f"{MANIFEST_NAME}: bundle format version {data.get('version')} is not supported")
            repos = [RepoEntry(r["repo_type"], r["repo_id"], r["revision"], r["commit"], r["info"], r["tree"],
                               r.get("refs"), [FileEntry(f["path"], f["blob"], int(f["size"]), bool(f["lfs"]))
                                               for f in r["files"]], r.get("commit_info"))
                     for r in data["repos"]]
            blobs = {str(k): int(v) for k, v in data["blobs"].items()}
            manifest = cls(repos, blobs, data["created_at"], data["source"], data.get("base"),
                           data.get("checksum"), data.get("signature"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"{MANIFEST_NAME}: malformed ({exc.__class__.__name__}: {exc})") from None
        bad = [k for k in [*blobs, *manifest.referenced_blobs()] if not is_blob_key(k)]
        if bad:
            raise BundleError(f"{MANIFEST_NAME}: {bad[0]!r} is not a blob hash")
        if manifest.checksum != manifest.compute_checksum():
            raise BundleError(f"{MANIFEST_NAME}: checksum mismatch (the manifest was changed or damaged)")
        return manifest

    def check_signature(self, trusted: list[Ed25519PublicKey]) -> str | None:
        """Raise unless the manifest is signed by one of ``trusted`` (no keys: anything intact passes).

        Returns the key id that signed it, if it is signed.
        """
        sig = self.signature
        if not trusted:
            return sig.get("key_id") if sig else None
        if not sig:
            raise BundleError(f"{MANIFEST_NAME}: the bundle is not signed, and trusted keys are configured")
        if sig.get("algorithm") != "ed25519":
            raise BundleError(f"{MANIFEST_NAME}: unsupported signature algorithm {sig.get('algorithm')!r}")
        try:
            value = base64.b64decode(sig.get("value", ""), validate=True)
        except ValueError:
            raise BundleError(f"{MANIFEST_NAME}: the signature is not valid base64") from None
        exceptions = _crypto()[0]
        for key in trusted:
            try:
                key.verify(value, self.canonical())
                return key_id(key)
            except exceptions.InvalidSignature:
                continue
        raise BundleError(f"{MANIFEST_NAME}: the signature (key {sig.get('key_id')}) does not verify "
                          "against any trusted key")


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key."""
    serialization = _crypto()[1]
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str) -> Ed25519PrivateKey:
    _, serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"signing key {path}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError(f"signing key {path}: not an ed25519 private key")
    return key


def load_public_keys(paths: str) -> list[Ed25519PublicKey]:
    """The comma-separated PEM files of ``sync_trusted_keys``."""
    keys: list[Ed25519PublicKey] = []
    if not paths.strip():
        return keys
    _, serialization, ed25519 = _crypto()
    for path in (p.strip() for p in paths.split(",")):
        if not path:
            continue
        try:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise BundleError(f"trusted key {path}: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise BundleError(f"trusted key {path}: not an ed25519 public key")
        keys.append(key)
    return keys


def generate_keypair(prefix: Path) -> tuple[Path, Path, str]:
    """Write ``PREFIX.key`` (private, mode 600) and ``PREFIX.pub``; return both paths and the key id."""
    _, serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as out:
        out.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public, key_id(key.public_key())
