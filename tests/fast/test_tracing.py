"""Tracing: one trace per request, with the fill, upstream requests, store operations and database statements
inside it, and the trace carried on to the upstream in ``traceparent``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hubproxy.observability import tracing
from tests.fakehub import FakeHub
from tests.helpers import wait_until


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.setup(exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.reset()


def test_a_cold_download_is_one_trace(spans: InMemorySpanExporter, make_app, fakehub: FakeHub) -> None:  # noqa: ANN001
    app = make_app(tracing="true")
    fakehub.reset_counts()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    status, _, _ = app.request("GET", "/alice/files/resolve/main/config.json", {"traceparent": caller})
    assert status == 200
    # The verified blob is stored just after the client has its last byte.
    assert wait_until(lambda: "store ingest" in {s.name for s in spans.get_finished_spans()})
    finished = spans.get_finished_spans()
    names = {s.name for s in finished}
    assert {"GET request", "fill", "upstream GET", "store ingest"} <= names, names
    assert any(n.startswith("db ") for n in names)
    trace_id = int("0af7651916cd43dd8448eb211c80319c", 16)
    inside = [s for s in finished if s.name in ("fill", "upstream GET", "store ingest", "GET request")]
    assert {s.context.trace_id for s in inside} == {trace_id}  # the client's trace, continued
    sent = [h for _, p, h in fakehub.requests if p.endswith("config.json")]
    assert sent and all(h.get("traceparent", "").startswith("00-0af7651916cd43dd8448eb211c80319c-") for h in sent)


def test_tracing_off_adds_nothing(make_app, fakehub: FakeHub) -> None:  # noqa: ANN001
    app = make_app()
    fakehub.reset_counts()
    assert app.request("GET", "/alice/files/resolve/main/config.json")[0] == 200
    assert not any("traceparent" in {k.lower() for k in h} for _, _, h in fakehub.requests)
