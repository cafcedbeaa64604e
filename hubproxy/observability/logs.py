"""Logging: JSON lines (or text) carrying the request id, with anything token-like masked."""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from contextvars import ContextVar

#: The id of the request being handled (``X-Request-Id``); tasks started by it inherit it.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
#: Hub-style tokens and bearer credentials, wherever they might appear in a message.
_SECRET = re.compile(r"(hf_[A-Za-z0-9]{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})")
#: Attributes of every LogRecord; anything else was passed with ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "color_message"}


def redact(text: str) -> str:
    if "hf_" not in text and "earer" not in text and "EARER" not in text:
        return text  # the common case, without a regex
    return _SECRET.sub("[redacted]", text)


class ContextFilter(logging.Filter):
    """Adds ``request_id`` to every record and masks secrets in its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", "-")
        if rid != "-":
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    """Root logging for a hubproxy process (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin, every start
