"""Prometheus metrics, served at ``/metrics``.

Metric objects are module globals: one server process is one app. With ``workers: N`` the
server sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start, prometheus_client then
keeps values in files there, and a scrape of any worker sums them all. The server replaces a worker that dies
(killed for memory, or for hanging); its counters stay in the sums, as counters must, but the gauges that
count what live workers are doing (fills in flight, the audit queue) drop its last values at the next scrape.
"""

from __future__ import annotations

import os
import platform
import re

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics import exposition as openmetrics

from hubproxy import __version__

#: Latency buckets (seconds) for time to first byte and request duration.
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
FILL_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

REQUESTS = Counter("hubproxy_requests_total", "HTTP requests answered, by route, method and status",
                   ["route", "method", "status"])
TTFB = Histogram("hubproxy_time_to_first_byte_seconds",
                 "Seconds from a request's arrival to the first byte of its answer", ["route"], buckets=LATENCY)
DURATION = Histogram("hubproxy_request_duration_seconds", "Seconds from a request's arrival to its last byte",
                     ["route"], buckets=LATENCY)
SERVED_BYTES = Counter("hubproxy_served_bytes_total",
                       "File bytes sent to clients, by where they came from (hit, miss, relay, passthrough)",
                       ["cache"])
ZERO_COPY_BYTES = Counter("hubproxy_zero_copy_bytes_total",
                          "File bytes sent outside uvicorn, never as Python objects: sendfile(2) from the page cache, "
                          "read(2)/write(2) through one buffer from an S3 bucket's connection (a subset of served "
                          "bytes)")
UPSTREAM_BYTES = Counter("hubproxy_upstream_bytes_total", "File bytes received from the upstream")
FILL_REQUESTS = Counter("hubproxy_fill_requests_total",
                        "Upstream requests of fills, by what receives the body: a worker thread on a blocking "
                        "connection (parts, and a probe to a known CDN URL) or the event loop (a probe through "
                        "the upstream, proxies, redirects)",
                        ["receiver"])
FILL_HASHED_BYTES = Counter("hubproxy_fill_hashed_bytes_total",
                            "Bytes of fills hashed, by where the hash read them: a buffer just written (still in "
                            "the CPU's caches) or the spool file's pages", ["source"])
FILL_SENT_BYTES = Counter("hubproxy_fill_sent_bytes_total",
                          "Bytes of fills written with direct I/O sent to their readers, by where they came from: "
                          "the buffer they were written from, or the spool file", ["source"])
FILL_WRITTEN_BYTES = Counter("hubproxy_fill_written_bytes_total",
                             "Bytes fills wrote into their spool files, by how: with direct I/O past the page cache "
                             "(whole pages, where the filesystem takes it) or through the page cache", ["how"])
UPSTREAM_ERRORS = Counter("hubproxy_upstream_errors_total",
                          "Upstream failures: unreachable, timeout, 5xx answers, bytes that failed verification",
                          ["kind"])
FILLS_IN_FLIGHT = Gauge("hubproxy_fills_in_flight", "Blob fills from the upstream in progress",
                        multiprocess_mode="livesum")
FILLS = Histogram("hubproxy_fill_duration_seconds", "Seconds a blob fill took, by result (ok, error)",
                  ["result"], buckets=FILL_SECONDS)
# Any worker reads the store's size from the index: the latest reading is the size (a dead worker's older,
# larger one must not outlast an eviction or a purge, as the largest would).
CACHE_BYTES = Gauge("hubproxy_cache_size_bytes", "Bytes of verified blobs in the store (as the index counts them)",
                    multiprocess_mode="mostrecent")
EVICTIONS = Counter("hubproxy_evictions_total", "Blobs evicted to stay under cache_max_bytes")
STORE_OPERATIONS = Counter("hubproxy_store_operations_total", "Blob store operations, by operation and result",
                           ["op", "result"])
STORE_LARGE_READS = Counter("hubproxy_store_large_reads_total",
                            "Reads of large stored objects from S3, by how they went on once their first stream was "
                            "timed: one stream, or ranged GETs in parallel", ["mode"])
STORE_SECONDS = Histogram("hubproxy_store_operation_seconds", "Seconds a blob store operation took", ["op"],
                          buckets=LATENCY)
AUDIT_QUEUE = Gauge("hubproxy_audit_queue_depth", "Download events waiting to be written",
                    multiprocess_mode="livesum")


BUILD_INFO = Gauge("hubproxy_build_info", "Always 1; the labels say which hubproxy and Python serve",
                   ["version", "python"], multiprocess_mode="max")
BUILD_INFO.labels(__version__, platform.python_version()).set(1)


def exposition(accept: str = "") -> tuple[bytes, str]:
    """The exposition format the scraper asks for (OpenMetrics when its ``Accept`` names it, the Prometheus text
    format otherwise), summed over worker processes when there are several."""
    registry: CollectorRegistry | None = None
    if folder := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        forget_dead_workers(folder)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    if "application/openmetrics-text" in accept:
        return openmetrics.generate_latest(registry or REGISTRY), openmetrics.CONTENT_TYPE_LATEST
    return generate_latest(registry or REGISTRY), CONTENT_TYPE_LATEST


#: A file of "live" gauge values (``livesum``, ``livemax``, ...) of one process: ``gauge_<mode>_<pid>.db``.
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_([0-9]+)\.db")


def forget_dead_workers(folder: str) -> None:
    """Drop the live gauge values of worker processes that no longer run (their counters and histograms stay)."""
    dead = set()
    for name in os.listdir(folder):
        if (match := _LIVE_GAUGE_FILE.fullmatch(name)) and not _running(pid := int(match.group(1))):
            dead.add(pid)
    for pid in dead:
        multiprocess.mark_process_dead(pid, folder)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds the number: not ours, but leave its file be
        return True
    return True
