"""Blobs in S3 or an S3-compatible store (boto3): ``<prefix>blobs/<k[:2]>/<key>`` in a bucket.

A fill uploads its parts while it fills (``start_upload``: a multipart upload completed only once the
blob is verified, aborted otherwise); other verified files are ingested by uploading them (multipart
above 8 MiB, which boto3 aborts if a part fails). Either way an object exists complete or not at all.
Reads of a plain-http endpoint are made with a presigned URL on a raw connection whose body is relayed
to the client (``rawget.py``); others run ahead of the client in a thread (``readahead.py``). A large read whose
one stream turns out slow goes on with ranged GETs in parallel (``parallelread.py``). Every call that
waits on the bucket for a client or a fill (a GET's head, a piece of its body, a HEAD, storing a verified blob)
is made in ``bucket_calls``, threads of its own (the store's ``pool``): a slow or throttling bucket then holds
none of the worker threads every disk and database call of the process shares.
``presign`` gives a short-lived URL for ``s3_redirect``. A multipart upload cut short by a crash (its
process killed mid-fill or mid-ingest) leaves parts the bucket keeps and bills but never lists as objects;
``abort_abandoned_uploads`` drops those of this store's blobs once they are old enough.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hubproxy.config import Settings
from hubproxy.direct import route
from hubproxy.store.base import is_blob_key
from hubproxy.store.parallelread import PARALLEL_MIN_BYTES, PART_ATTEMPTS, AdaptiveRead, BotoBody, FirstStream
from hubproxy.store.rawget import RawAnswer, raw_get
from hubproxy.store.readahead import read_ahead
from hubproxy.store.s3upload import S3Upload
from hubproxy.threads import run_in

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
#: Parts of an upload made while filling (S3 allows 10,000 parts; larger blobs get larger parts).
FILL_PART_SIZE = 16 * 1024 * 1024
MAX_PARTS = 10_000
READ_TIMEOUT = 60
#: Reads at least this long are relayed from a raw GET when the endpoint allows (``rawget.py``).
RAW_READ_MIN_BYTES = 1024 * 1024
#: Bytes taken from a part's answer at a time (``_range_pieces``).
PIECE_BYTES = 1024 * 1024
#: Lifetime of the presigned URL such a read is made with (it is used at once).
RAW_URL_TTL = 300
#: Threads the calls that wait on the bucket run in: at most one per read or fill at a time. Beyond that many
#: at once, they wait for each other, never for other work. ``BUCKET_THREADS_STARTED`` start with the process.
BUCKET_THREADS = 256
BUCKET_THREADS_STARTED = 32
bucket_calls = ThreadPoolExecutor(BUCKET_THREADS, "hubproxy-s3")


def error_code(exc: BaseException) -> str | None:
    """The code of an S3 error answer (``NoSuchKey``, ``404``, ...); None for anything else."""
    return exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None


def is_missing(exc: BaseException) -> bool:
    """An S3 error that means "no such object"."""
    return error_code(exc) in ("404", "NoSuchKey", "NotFound")


class S3BlobStore:
    """A bucket (and prefix) of verified blobs named by their hash."""

    pool = bucket_calls

    def __init__(self, settings: Settings, folder: str = "blobs") -> None:
        if not settings.s3_bucket:
            raise ValueError("setting 's3_bucket' is required with store: s3")
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.folder = folder
        self.presign_ttl = settings.s3_presign_ttl
        self.read_connections = settings.s3_read_connections
        self.read_single_stream_mbps = settings.s3_read_single_stream_mbps
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
            config=Config(
                # SigV4 for presigned URLs too: with a custom endpoint botocore would presign with SigV2, which
                # AWS has retired and S3-compatible stores need not accept (SigV4 URLs live at most 7 days).
                signature_version="s3v4",
                # Writes carry a CRC32 the server checks; over plain http botocore would also sha256 every
                # uploaded byte to sign it (as it does not over https), doubling the CPU of a fill's upload.
                s3={"addressing_style": "path" if settings.s3_path_style else "auto",
                    "payload_signing_enabled": False},
                retries={"max_attempts": 4, "mode": "standard"},
                max_pool_connections=64,
                connect_timeout=10,
                read_timeout=READ_TIMEOUT,
            ),
        )
        #: Reads may bypass boto3 (``rawget.py``): a plain-http endpoint no proxy applies to.
        self.plain_http = route(self.client.meta.endpoint_url) is not None and \
            self.client.meta.endpoint_url.startswith("http://")
        #: Unfinished uploads listed by ``abort_abandoned_uploads``: when this process first saw each.
        self._uploads_seen: dict[str, float] = {}
        self.transfer = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                                       max_concurrency=4)

    def object_key(self, key: str) -> str:
        if not is_blob_key(key):
            raise ValueError(f"not a blob key: {key!r}")
        return f"{self.prefix}{self.folder}/{key[:2]}/{key}"

    def stat(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        return int(head["ContentLength"])

    async def read(self, key: str, start: int, end: int, chunk: int) -> AsyncIterator[bytes] | None:
        parallel = self.read_connections > 1 and end - start >= PARALLEL_MIN_BYTES
        first: FirstStream | None = None
        if end - start >= RAW_READ_MIN_BYTES and self.plain_http:
            answer = await run_in(bucket_calls, self._raw_answer, key, start, end)
            if answer is not None and answer.status == 404:
                answer.close()
                return None
            if answer is not None:
                first = answer.body(end - start, bucket_calls)
        if first is None:
            try:
                resp = await run_in(bucket_calls, self._get, key, start, end)
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise
            if not parallel:
                return read_ahead(resp["Body"], pool=bucket_calls)
            first = BotoBody(resp["Body"], bucket_calls)
        if not parallel:
            return first  # type: ignore[return-value]
        return AdaptiveRead(first, functools.partial(self._fetch_part, key), start, end,
                            connections=self.read_connections, single_stream_mbps=self.read_single_stream_mbps,
                            pool=bucket_calls)

    def _get(self, key: str, start: int, end: int) -> Any:
        """(Blocking.) boto3's answer to a GET of bytes ``[start, end)``."""
        return self.client.get_object(Bucket=self.bucket, Key=self.object_key(key), Range=f"bytes={start}-{end - 1}")

    def _fetch_part(self, key: str, start: int, end: int) -> bytes:
        """(Blocking.) Bytes ``[start, end)`` of a stored object for a parallel read (``parallelread.py``): a ranged
        GET, asked for again from the byte it reached if it fails, up to ``PART_ATTEMPTS`` times in all."""
        pieces: list[bytes] = []
        got, failures = 0, 0
        while got < end - start:
            try:
                for piece in self._range_pieces(key, start + got, end):
                    pieces.append(piece)
                    got += len(piece)
            except (OSError, BotoCoreError, ClientError) as exc:
                failures += 1
                if failures >= PART_ATTEMPTS:
                    raise OSError(f"bytes {start + got}-{end - 1} of {key} could not be read: {exc}") from exc
        return b"".join(pieces)

    def _range_pieces(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """(Blocking.) The bytes ``[start, end)`` as they arrive (a raw GET where the endpoint allows, else boto3's);
        an error after some of them is raised once they are yielded."""
        answer = self._raw_answer(key, start, end) if self.plain_http else None
        if answer is not None and answer.status != 206:
            answer.close()
            raise OSError(f"the bucket answered a ranged GET of {key} with {answer.status}")
        body: FirstStream = answer.body(end - start) if answer is not None else \
            BotoBody(self._get(key, start, end)["Body"], None)
        try:
            left = end - start
            while left > 0:
                piece = body.take(min(left, PIECE_BYTES))
                if not piece:
                    raise OSError(f"the answer ended {left} bytes early")
                left -= len(piece)
                yield piece
        finally:
            body.close_now()

    def _raw_answer(self, key: str, start: int, end: int) -> RawAnswer | None:
        """(Blocking.) The answer to a GET of bytes ``[start, end)`` on a raw connection (``rawget.py``) if it is
        the range asked for or a 404; None for anything else, and the read is then made through boto3."""
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)}, ExpiresIn=RAW_URL_TTL)
        try:
            answer = raw_get(url, {"Range": f"bytes={start}-{end - 1}"}, READ_TIMEOUT)
        except OSError:
            return None
        exact = answer.status == 206 and answer.headers.get("content-length") == str(end - start) \
            and "transfer-encoding" not in answer.headers
        if exact or answer.status == 404:
            return answer
        answer.close()
        if answer.status not in (206, 416) and answer.status < 500:
            # Not this object (a 206 or 416 of another length: it is not what its record says) nor a passing
            # failure (5xx): the endpoint does not take these reads as S3 does (a presigned URL refused, a
            # range ignored, a redirect). boto3 makes every read from now on instead of two requests each.
            self.plain_http = False
            log.warning("the S3 endpoint answered a presigned ranged GET with %d; reads go through boto3 from now on",
                        answer.status)
        return None

    def ingest(self, key: str, path: str) -> None:
        self.client.upload_file(path, self.bucket, self.object_key(key), Config=self.transfer,
                                ExtraArgs={"ContentType": "application/octet-stream"})

    def start_upload(self, key: str, size: int) -> S3Upload | None:
        if size < 2 * FILL_PART_SIZE:
            return None  # one PUT after verification is as fast
        part_bytes = max(FILL_PART_SIZE, -(-size // MAX_PARTS))
        answer = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.object_key(key),
                                                     ContentType="application/octet-stream")
        return S3Upload(self.client, self.bucket, self.object_key(key), answer["UploadId"], part_bytes)

    def abort_abandoned_uploads(self, older_than: float, keep: Collection[str] = ()) -> int:
        # An upload's age is counted from when this process first saw it, not from its "Initiated" time: the
        # bucket's clock may differ from ours, and S3-compatible servers need not keep that time (moto gives
        # every upload the same one). So a restarted process waits ``older_than`` again: late, never early.
        now = time.monotonic()
        seen: dict[str, float] = {}
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{self.folder}/"):
            for upload in page.get("Uploads", []):
                name = upload["Key"].rsplit("/", 1)[-1]
                # Only the shape this store writes: never another application's upload in a shared bucket.
                if not is_blob_key(name) or upload["Key"] != self.object_key(name):
                    continue
                first = seen[upload["UploadId"]] = self._uploads_seen.get(upload["UploadId"], now)
                if name in keep or now - first < older_than:
                    continue
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                except ClientError as exc:
                    if error_code(exc) != "NoSuchUpload":
                        raise
                    continue  # completed or aborted meanwhile
                aborted += 1
                log.info("aborted the unfinished multipart upload %s of %s", upload["UploadId"], upload["Key"])
        self._uploads_seen = seen
        return aborted

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def quarantine(self, key: str) -> None:
        source = self.object_key(key)
        self.client.copy_object(Bucket=self.bucket, Key=f"{self.prefix}quarantine/{key}",
                                CopySource={"Bucket": self.bucket, "Key": source})
        self.client.delete_object(Bucket=self.bucket, Key=source)

    def list(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{self.folder}/"):
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if is_blob_key(name):
                    yield name

    def presign(self, key: str) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)}, ExpiresIn=self.presign_ttl)

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)
