"""Which upload mode preupload answers for a file: ``regular`` (inline in the commit) or ``lfs``.

Clients from huggingface_hub 1.20 on, with ``hf_xet`` installed, send every ``lfs`` file over Xet and
never over LFS; the User-Agent tells the client's version but not whether Xet is installed or disabled.
So (``docs/protocol.md``, "Upload modes"):

- ``hosted_upload_mode: lfs`` (an operator's choice): LFS for every non-empty file;
- clients before 1.20 and other clients: LFS for files over 10 MiB or matching a ``.gitattributes`` LFS
  pattern (they negotiate LFS and never Xet);
- ``datasets`` pushes: LFS for parquet/arrow shards (``datasets`` deletes a shard once preuploaded);
- with Xet on (``xet: true``, the default), every client the same way: LFS by size and pattern, which clients
  from 1.20 on with ``hf_xet`` send through hubproxy's Xet CAS and others over LFS;
- with Xet off, clients from 1.20 on: regular up to ``regular_upload_max_bytes``; above that preupload refuses
  the file with a message telling the user to set ``HF_HUB_DISABLE_XET=1``, before any byte is sent.
"""

from __future__ import annotations

import fnmatch
import re

from hubproxy.hub.errors import HubError

LFS_SIZE = 10 * 1024 * 1024
_VERSION = re.compile(r"hf_hub/(\d+)\.(\d+)")
SHARD_SUFFIXES = (".parquet", ".arrow")


def client_version(user_agent: str) -> tuple[int, int] | None:
    """The huggingface_hub version in a User-Agent (``hf_hub/1.2.3``), if any."""
    found = _VERSION.search(user_agent)
    return (int(found.group(1)), int(found.group(2))) if found else None


def lfs_patterns(gitattributes: str) -> list[str]:
    return [line.split()[0] for line in gitattributes.splitlines() if "filter=lfs" in line and line.split()]


def covered(path: str, patterns: list[str]) -> bool:
    """Whether a ``.gitattributes`` pattern covers the path (a pattern without ``/`` matches the name)."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in p else name, p.replace("**/", "*").replace("[[:space:]]", " "))
               for p in patterns)


def too_big_inline(path: str, limit: int) -> HubError:
    return HubError(413, "FileTooLargeForInlineUpload",
                    f"{path} is larger than the {limit} bytes hubproxy accepts inline; hubproxy has no Xet "
                    "storage yet, so upload it over LFS: set HF_HUB_DISABLE_XET=1 and run the upload again")


def upload_mode(path: str, size: int, user_agent: str, patterns: list[str], forced: str, regular_max: int,
                xet: bool = False) -> str:
    """``lfs`` or ``regular`` for one file (or the refusal above the inline cap). With ``xet`` (hubproxy's CAS
    is on) every client is answered by size and pattern: current clients then send ``lfs`` files over Xet."""
    if size == 0:
        return "regular"
    if forced == "lfs":
        return "lfs"
    version = client_version(user_agent)
    if xet or version is None or version < (1, 20):
        return "lfs" if size > LFS_SIZE or covered(path, patterns) else "regular"
    if "datasets/" in user_agent and path.endswith(SHARD_SUFFIXES):
        return "lfs"
    if size > regular_max:
        raise too_big_inline(path, regular_max)
    return "regular"
