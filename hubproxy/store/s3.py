"""Blobs in S3 or an S3-compatible store (boto3).

Fills spool to the local data dir (where readers follow them as they grow, exactly as with
the local store); once verified, the file is uploaded (multipart above 8 MiB, which boto3
aborts if it fails) and only then exists in the bucket, so nothing unverified is ever
visible. Serving streams ranges from S3 through hubproxy or, with ``s3_redirect``, hands
clients a short-lived presigned URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hubproxy.config import Settings
from hubproxy.store.base import BlobHasher, StoreUnavailable, is_blob_key
from hubproxy.store.local import LocalBlobStore, LocalFill

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class S3Fill:
    """A fill spooled locally and uploaded on commit."""

    def __init__(self, store: S3BlobStore, spool: LocalFill) -> None:
        self.store = store
        self.spool = spool
        self.tmp_path = spool.tmp_path
        self.resume_from = spool.resume_from

    def restart(self) -> None:
        self.spool.restart()
        self.resume_from = 0

    def write(self, data: bytes | bytearray) -> None:
        self.spool.write(data)

    def commit(self) -> None:
        self.spool.close_file()
        try:
            self.store.upload(self.spool.key, self.tmp_path)
        finally:
            self.spool.abort()  # the spool file and its lock go either way

    def abort(self) -> None:
        self.spool.abort()


class S3BlobStore:
    """A bucket (and prefix) of verified blobs named by their hash."""

    def __init__(self, settings: Settings) -> None:
        if not settings.s3_bucket:
            raise ValueError("setting 's3_bucket' is required with store: s3")
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.presign_ttl = settings.s3_presign_ttl
        self.spool = LocalBlobStore(settings.data_dir)
        self.root = self.spool.root
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
            config=Config(
                s3={"addressing_style": "path" if settings.s3_path_style else "auto"},
                retries={"max_attempts": 4, "mode": "standard"},
                max_pool_connections=64,
                connect_timeout=10,
                read_timeout=60,
            ),
        )
        self.transfer = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                                       max_concurrency=4)

    def object_key(self, key: str) -> str:
        if not is_blob_key(key):
            raise ValueError(f"not a blob key: {key!r}")
        return f"{self.prefix}blobs/{key[:2]}/{key}"

    # -- state ----------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise StoreUnavailable(f"S3 HEAD failed: {exc}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"S3 unreachable: {exc}") from None
        return int(head["ContentLength"])

    def local_path(self, key: str) -> str | None:
        return None

    def list_blobs(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}blobs/"):
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if is_blob_key(name):
                    yield name

    # -- reading --------------------------------------------------------------------------
    async def reader(self, key: str, start: int, end: int, chunk: int) -> AsyncIterator[bytes] | None:
        try:
            resp = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=self.object_key(key),
                                           Range=f"bytes={start}-{end - 1}")
        except ClientError as exc:
            if _missing(exc):
                return None
            raise StoreUnavailable(f"S3 GET failed: {exc}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"S3 unreachable: {exc}") from None
        return _stream(resp["Body"], chunk)

    def presign(self, key: str) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)}, ExpiresIn=self.presign_ttl)

    def hash_blob(self, key: str) -> str:
        resp = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        hasher = BlobHasher(key, int(resp["ContentLength"]))
        body = resp["Body"]
        try:
            while chunk := body.read(8 << 20):
                hasher.update(chunk)
        finally:
            body.close()
        return hasher.hexdigest()

    # -- writing --------------------------------------------------------------------------
    def part_path(self, key: str) -> str:
        return self.spool.part_path(key)

    def begin_fill(self, key: str, resume: bool = False) -> S3Fill | None:
        spool = self.spool.begin_fill(key, resume)
        return None if spool is None else S3Fill(self, spool)

    def upload(self, key: str, path: str) -> None:
        """Upload a verified file; boto3 aborts the multipart upload if any part fails."""
        self.client.upload_file(path, self.bucket, self.object_key(key), Config=self.transfer,
                                ExtraArgs={"ContentType": "application/octet-stream"})

    def fill_progress(self, key: str) -> tuple[int | None, bool]:
        return self.spool.fill_progress(key)

    def clean_tmp(self) -> int:
        return self.spool.clean_tmp()

    def ping(self) -> None:
        self.spool.ping()
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StoreUnavailable(f"S3 bucket {self.bucket}: {exc}") from None

    def free_bytes(self) -> int:
        return self.spool.free_bytes()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def quarantine(self, key: str) -> None:
        source = self.object_key(key)
        self.client.copy_object(Bucket=self.bucket, Key=f"{self.prefix}quarantine/{key}",
                                CopySource={"Bucket": self.bucket, "Key": source})
        self.client.delete_object(Bucket=self.bucket, Key=source)


async def _stream(body: Any, chunk: int) -> AsyncIterator[bytes]:
    try:
        while data := await asyncio.to_thread(body.read, chunk):
            yield data
    finally:
        with contextlib.suppress(Exception):
            body.close()
