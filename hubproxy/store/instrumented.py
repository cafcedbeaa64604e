"""Every store driver, wrapped once: errors become ``StoreUnavailable`` (a 503 to clients, a line in a
command's output) and each operation is counted and timed in ``/metrics``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from typing import Any, TypeVar

from hubproxy.observability import metrics, tracing
from hubproxy.store.base import BlobStore, StoreUnavailable, Upload
from hubproxy.store.bodies import WrappedBody

T = TypeVar("T")


class InstrumentedStore:
    """A ``BlobStore`` around a driver: the same interface, with error mapping and metrics."""

    def __init__(self, driver: BlobStore, kind: str) -> None:
        self.driver = driver
        self.kind = kind
        self.pool = driver.pool

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = "ok"
        try:
            with tracing.span(f"store {op}", **{"hubproxy.store": self.kind}):
                return fn()
        except (ValueError, StoreUnavailable):
            result = "error"
            raise
        except Exception as exc:
            result = "error"
            raise StoreUnavailable(f"{self.kind} store: {op} failed: {exc.__class__.__name__}: {exc}"[:500]) from exc
        finally:
            metrics.STORE_OPERATIONS.labels(op, result).inc()
            metrics.STORE_SECONDS.labels(op).observe(time.perf_counter() - started)

    def stat(self, key: str) -> int | None:
        return self._call("stat", lambda: self.driver.stat(key))

    async def read(self, key: str, start: int, end: int, chunk: int) -> AsyncIterator[bytes] | None:
        started = time.perf_counter()
        try:
            body = await self.driver.read(key, start, end, chunk)
        except (ValueError, StoreUnavailable):
            raise
        except Exception as exc:
            metrics.STORE_OPERATIONS.labels("read", "error").inc()
            raise StoreUnavailable(f"{self.kind} store: read failed: {exc.__class__.__name__}: {exc}"[:500]) from exc
        metrics.STORE_OPERATIONS.labels("read", "ok").inc()
        metrics.STORE_SECONDS.labels("read").observe(time.perf_counter() - started)
        return None if body is None else self._mapped(body)

    def _mapped(self, body: AsyncIterator[bytes]) -> WrappedBody:
        def mapped(exc: Exception) -> Exception | None:
            if isinstance(exc, (OSError, ValueError)):
                return None
            return StoreUnavailable(f"{self.kind} store: reading failed: {exc.__class__.__name__}")

        return WrappedBody(body, errors=mapped)

    def ingest(self, key: str, path: str) -> None:
        self._call("ingest", lambda: self.driver.ingest(key, path))

    def start_upload(self, key: str, size: int) -> Upload | None:
        upload = self._call("start_upload", lambda: self.driver.start_upload(key, size))
        return None if upload is None else _InstrumentedUpload(self, upload)

    def abort_abandoned_uploads(self, older_than: float, keep: Collection[str] = ()) -> int:
        return self._call("abort_abandoned", lambda: self.driver.abort_abandoned_uploads(older_than, keep))

    def delete(self, key: str) -> None:
        self._call("delete", lambda: self.driver.delete(key))

    def quarantine(self, key: str) -> None:
        self._call("quarantine", lambda: self.driver.quarantine(key))

    def list(self) -> Iterator[str]:
        return iter(self._call("list", lambda: list(self.driver.list())))

    def presign(self, key: str) -> str | None:
        return self._call("presign", lambda: self.driver.presign(key))

    def ping(self) -> None:
        self._call("ping", self.driver.ping)

    def __getattr__(self, name: str) -> Any:  # driver details for tests and benchmarks (bucket, root, ...)
        return getattr(self.driver, name)


class _InstrumentedUpload:
    """An ``Upload`` whose operations are mapped and counted like the store's."""

    def __init__(self, store: InstrumentedStore, upload: Upload) -> None:
        self.store = store
        self.upload = upload
        self.part_bytes = upload.part_bytes

    def put_part(self, number: int, data: memoryview) -> None:
        self.store._call("upload_part", lambda: self.upload.put_part(number, data))

    def complete(self) -> None:
        self.store._call("complete_upload", self.upload.complete)

    def abort(self) -> None:
        self.store._call("abort_upload", self.upload.abort)
