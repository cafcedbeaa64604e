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


def escape_controls(text: str) -> str:
    """Control characters (a newline from a client's URL, say) as ``\\xNN``: one event stays one line."""
    if not any(c < " " or c == "\x7f" for c in text):
        return text
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


class TextFormatter(logging.Formatter):
    """The text format, with control characters in messages escaped (tracebacks keep their lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def resolve_format(fmt: str) -> str:
    """``auto``: text for a person at a terminal, JSON for a log collector."""
    if fmt != "auto":
        return fmt
    try:
        return "text" if sys.stderr.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def setup_logging(level: str, fmt: str) -> None:
    """Root logging for a hubproxy process (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if resolve_format(fmt) == "json" else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin, every start
