"""Optional OpenTelemetry tracing (``tracing: true`` and the ``tracing`` extra; off by default).

Spans: one per request (continuing a ``traceparent`` the client sent), and inside it the blob fill, each
upstream request (which carries the ``traceparent`` on to the upstream), each blob store operation and each
database statement. Spans are exported over OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the standard
OpenTelemetry variables apply). With tracing off every helper here costs a function call and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)
_tracer: Any = None
_propagate: Any = None


def setup(service: str = "hubproxy", exporter: Any = None) -> None:
    """Turn tracing on (``exporter``: where spans go; default OTLP over HTTP)."""
    global _tracer, _propagate
    try:
        from opentelemetry import propagate
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        from hubproxy.config import ConfigError

        raise ConfigError("setting 'tracing': needs the 'tracing' extra: pip install 'hubproxy[tracing]'") from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracer = provider.get_tracer("hubproxy")
    _propagate = propagate
    log.info("tracing on: spans exported over OTLP")


def reset() -> None:
    """Tracing off again (tests)."""
    global _tracer, _propagate
    _tracer = _propagate = None


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def span(name: str, kind: str = "internal", parent_headers: dict[str, str] | None = None,
         **attributes: Any) -> Iterator[Any]:
    """A span around a block (nothing when tracing is off); ``parent_headers``: a request's incoming headers."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    context = _propagate.extract(parent_headers) if parent_headers else None
    with _tracer.start_as_current_span(name, context=context, kind=getattr(SpanKind, kind.upper()),
                                       attributes={k: v for k, v in attributes.items() if v is not None}) as current:
        yield current


def inject(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the current span's ``traceparent`` added (for the upstream)."""
    if _propagate is not None:
        _propagate.inject(headers)
    return headers


def instrument_engine(engine: Any) -> None:
    """A span per database statement, under whatever span the statement runs in."""
    if _tracer is None:
        return
    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        current = _tracer.start_span("db " + statement.split(None, 1)[0].lower(), attributes={
            "db.system": engine.dialect.name, "db.statement": statement[:500]})
        conn.info.setdefault("hubproxy_spans", []).append(current)

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        spans = conn.info.get("hubproxy_spans")
        if spans:
            spans.pop().end()
