"""A multipart upload to an S3 bucket of a blob being filled (``store.base.Upload``).

Each part is sent from the caller's buffer as it is: boto3 takes a ``bytes`` body whole into its request (the
headers and the body joined into one new object before the send, a copy of every part), but reads a file-like body
in blocks and sends each as it comes. ``ViewBody`` makes the buffer such a body whose blocks are views of it, so
the part reaches the socket with no copy in Python; the CRC32 the bucket checks is computed over the same views.
"""

from __future__ import annotations

from typing import Any


class ViewBody:
    """A read-only, seekable file over ``view`` whose reads return views of it (no copies)."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.pos = 0

    def read(self, size: int | None = -1) -> memoryview | bytes:
        end = len(self.view) if size is None or size < 0 else min(len(self.view), self.pos + size)
        if end <= self.pos:
            return b""
        chunk = self.view[self.pos:end]
        self.pos = end
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self.pos, len(self.view))[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self.view)


class S3Upload:
    """A multipart upload of one blob (see ``store.base.Upload``)."""

    def __init__(self, client: Any, bucket: str, key: str, upload_id: str, part_bytes: int) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.upload_id = upload_id
        self.part_bytes = part_bytes
        self.etags: dict[int, str] = {}

    def put_part(self, number: int, data: memoryview) -> None:
        answer = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                         PartNumber=number, Body=ViewBody(data), ContentLength=len(data))
        self.etags[number] = answer["ETag"]

    def complete(self) -> None:
        parts = [{"PartNumber": n, "ETag": self.etags[n]} for n in sorted(self.etags)]
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": parts})

    def abort(self) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
