"""Admin action events: who changed what, from what to what (written at once: they are rare)."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine


def record(engine: Engine, actor: str, action: str, target: str, before: Any = None, after: Any = None) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_admin (ts, actor, action, target, before, after) "
                          "VALUES (:ts, :a, :ac, :t, :b, :af)"),
                     {"ts": time.time(), "a": actor, "ac": action, "t": target,
                      "b": None if before is None else json.dumps(before, default=str),
                      "af": None if after is None else json.dumps(after, default=str)})


def query(engine: Engine, *, since: float | None = None, actor: str | None = None, limit: int = 100,
          offset: int = 0) -> list[dict[str, Any]]:
    where, params = [], {"limit": limit, "offset": offset}
    if since is not None:
        where.append("ts >= :since")
        params["since"] = since
    if actor is not None:
        where.append("actor = :actor")
        params["actor"] = actor
    sql = ("SELECT ts, actor, action, target, before, after FROM audit_admin"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY ts DESC, id DESC LIMIT :limit OFFSET :offset")
    with engine.connect() as conn:
        rows = conn.execute(text(sql), params).all()
    return [{"ts": r[0], "actor": r[1], "action": r[2], "target": r[3],
             "before": json.loads(r[4]) if r[4] else None, "after": json.loads(r[5]) if r[5] else None} for r in rows]
