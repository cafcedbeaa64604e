"""The commit body (NDJSON, ``docs/protocol.md``, "Commits"), read with bounded memory.

The body is first spooled to a file as it arrives; then each line is read from the file. Ordinary lines
are small and parsed whole. A ``file`` line carries the file's bytes as base64 and can be larger than
memory: past ``SMALL_LINE`` bytes its ``content`` string is decoded straight into a blob file, and only
the rest of the line is parsed as JSON. Each file's bytes go to the blob store as they are read
(``blobs_in``), named by their git blob id.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from hubproxy.hosted.gitobjects import blob_hasher

#: Lines up to this size are parsed whole; longer ones must be ``file`` lines and are streamed.
SMALL_LINE = 1024 * 1024
CHUNK = 4 * 1024 * 1024  # base64 characters decoded at a time (a multiple of 4)
CONTENT_KEY = b'"content"'


class CommitBodyError(ValueError):
    """The body is not a valid commit (the message says which line and why)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Header:
    summary: str
    description: str
    parent: str | None


@dataclass
class Operation:
    """One line after the header: ``file`` (bytes stored as ``blob``), ``lfsFile``, ``deletedFile``,
    ``deletedFolder``."""

    kind: str
    path: str
    blob: str | None = None
    size: int | None = None
    #: A regular file's bytes when small (README.md's card is read from them).
    content: bytes | None = None


#: Stores a finished file (its path on disk, its git blob id, its size); returns nothing.
BlobSink = Callable[[str, str, int], None]


def _parse(line: bytes, number: int) -> dict[str, Any]:
    try:
        item = json.loads(line)
    except ValueError:
        raise CommitBodyError(f"line {number} is not valid JSON") from None
    if not isinstance(item, dict) or not isinstance(item.get("value"), dict) or not isinstance(item.get("key"), str):
        raise CommitBodyError(f"line {number} is not a {{\"key\", \"value\"}} object")
    return item


class CommitBody:
    """Reads a spooled commit body: ``header()`` once, then ``operations()``."""

    def __init__(self, path: str, tmp_dir: str, sink: BlobSink, max_file: int, max_operations: int) -> None:
        self.file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.tmp_dir = tmp_dir
        self.sink = sink
        self.max_file = max_file
        self.max_operations = max_operations
        self.number = 0

    def close(self) -> None:
        self.file.close()

    def _next_line(self) -> tuple[bytes, bool]:
        """The next line if it is small (``True``), else its first ``SMALL_LINE`` bytes (``False``)."""
        line = self.file.readline(SMALL_LINE + 1)
        self.number += 1
        if len(line) <= SMALL_LINE or line.endswith(b"\n"):
            return line.rstrip(b"\r\n"), True
        return line, False

    def header(self) -> Header:
        line, small = self._next_line()
        if not small:
            raise CommitBodyError("the commit header line is too long", 413)
        item = _parse(line, 1)
        value = item["value"]
        if item["key"] != "header" or not isinstance(value.get("summary"), str):
            raise CommitBodyError("the first line must be the commit header with a summary")
        parent = value.get("parentCommit")
        if parent is not None and not (isinstance(parent, str) and 5 <= len(parent) <= 40
                                       and all(c in "0123456789abcdefABCDEF" for c in parent)):
            raise CommitBodyError("parentCommit must be 5 to 40 hexadecimal characters")
        description = value.get("description") or ""
        if not value["summary"].strip():
            raise CommitBodyError("the commit summary must not be empty")
        return Header(value["summary"], description if isinstance(description, str) else "",
                      parent.lower() if parent else None)

    def operations(self) -> Iterator[Operation]:
        count = 0
        while True:
            line, small = self._next_line()
            if small and not line:
                if self.file.read(1) == b"":
                    return
                continue
            count += 1
            if count > self.max_operations:
                raise CommitBodyError(f"a commit holds at most {self.max_operations} operations; split it", 413)
            yield self._small(line) if small else self._streamed(line)

    def _small(self, line: bytes) -> Operation:
        item = _parse(line, self.number)
        key, value = item["key"], item["value"]
        path = value.get("path")
        if not isinstance(path, str):
            raise CommitBodyError(f"line {self.number}: path must be a string")
        if key == "file":
            if value.get("encoding", "base64") != "base64" or not isinstance(value.get("content"), str):
                raise CommitBodyError(f"line {self.number}: file content must be a base64 string")
            try:
                data = base64.b64decode(value["content"], validate=True)
            except (binascii.Error, ValueError):
                raise CommitBodyError(f"line {self.number}: content is not valid base64") from None
            return self._store_bytes(path, data)
        if key == "lfsFile":
            oid, size = value.get("oid"), value.get("size")
            if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or len(oid) != 64 \
                    or any(c not in "0123456789abcdef" for c in oid):
                raise CommitBodyError(f"line {self.number}: lfsFile needs a sha256 oid")
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                raise CommitBodyError(f"line {self.number}: lfsFile size must be a whole number")
            return Operation("lfsFile", path, oid, size)
        if key in ("deletedFile", "deletedFolder"):
            return Operation(key, path)
        raise CommitBodyError(f"line {self.number}: unknown operation {key[:50]!r}")

    def _store_bytes(self, path: str, data: bytes) -> Operation:
        if len(data) > self.max_file:
            raise CommitBodyError(_too_big(path, self.max_file), 413)
        h = blob_hasher(len(data))
        h.update(data)
        key = h.hexdigest()
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        self.sink(tmp, key, len(data))
        return Operation("file", path, key, len(data), data if len(data) <= SMALL_LINE else None)

    def _streamed(self, start: bytes) -> Operation:
        """A ``file`` line too long to hold: decode its content into a file, then parse the rest."""
        at = start.find(CONTENT_KEY)
        quote = start.find(b'"', at + len(CONTENT_KEY) + 1) if at >= 0 else -1
        if at < 0 or quote < 0 or start[at + len(CONTENT_KEY):quote].strip(b": ") != b"":
            raise CommitBodyError(f"line {self.number} is longer than {SMALL_LINE} bytes and is no file line", 413)
        prefix = start[:at]
        self.file.seek(self.file.tell() - len(start) + quote + 1)
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        try:
            size = self._decode_into(fd, tmp)
            rest = self.file.readline(SMALL_LINE + 1)
            if len(rest) > SMALL_LINE:
                raise CommitBodyError(f"line {self.number} has too much after its content", 413)
            item = _parse(prefix + b'"content":""' + rest.rstrip(b"\r\n"), self.number)
            value = item["value"]
            if item["key"] != "file" or value.get("encoding", "base64") != "base64" \
                    or not isinstance(value.get("path"), str):
                raise CommitBodyError(f"line {self.number} is longer than {SMALL_LINE} bytes and is no file line", 413)
            h = blob_hasher(size)
            with open(tmp, "rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
            key = h.hexdigest()
            self.sink(tmp, key, size)
            return Operation("file", value["path"], key, size)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _decode_into(self, fd: int, tmp: str) -> int:
        """Decode base64 from the body up to the closing quote into ``fd``; the body is left after the quote."""
        size, carry = 0, b""
        with os.fdopen(fd, "wb") as out:
            while True:
                block = self.file.read(CHUNK)
                if not block:
                    raise CommitBodyError(f"line {self.number} ends inside its content")
                end = block.find(b'"')
                text = carry + (block if end < 0 else block[:end])
                if end >= 0:
                    self.file.seek(self.file.tell() - len(block) + end + 1)
                    usable, carry = text, b""
                else:
                    cut = len(text) - len(text) % 4
                    usable, carry = text[:cut], text[cut:]
                try:
                    data = base64.b64decode(usable, validate=True)
                except (binascii.Error, ValueError):
                    raise CommitBodyError(f"line {self.number}: content is not valid base64") from None
                size += len(data)
                if size > self.max_file:
                    raise CommitBodyError(_too_big("a file", self.max_file), 413)
                out.write(data)
                if end >= 0:
                    return size


def _too_big(path: str, limit: int) -> str:
    return (f"{path} is larger than the {limit} bytes hubproxy accepts inline in a commit; upload it over LFS "
            "(set HF_HUB_DISABLE_XET=1)")
