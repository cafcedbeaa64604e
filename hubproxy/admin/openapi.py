"""The admin API's OpenAPI 3.0 document and its self-contained docs page, both made from ``ENDPOINTS``."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from hubproxy import __version__
from hubproxy.admin.endpoints import ENDPOINTS

PREFIX = "/admin/api/v1"


def openapi() -> dict[str, Any]:
    """The OpenAPI document of the admin API."""
    paths: dict[str, Any] = {}
    error = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    for e in ENDPOINTS:
        op: dict[str, Any] = {
            "summary": e.summary, "operationId": f"{e.method.lower()}{re.sub(r'[^a-zA-Z]', '_', e.path)}",
            "security": [{"bearer": []}],
            "responses": {str(e.status): {"description": "ok", "content": {"application/json": {"schema": e.response}}},
                          "400": error, "401": error, "403": error, "404": error, "409": error, "413": error},
            "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                           for n in re.findall(r"\{(\w+)\}", e.path)]
                          + [{"name": n, "in": "query", "required": False, "schema": s} for n, s in e.query.items()],
        }
        if e.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": e.body}}}
        paths.setdefault(PREFIX + e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "hubproxy admin API", "version": __version__,
                 "description": "Users, tokens, projects, policies, audit and cache of a hubproxy. "
                                "Send `Authorization: Bearer <token>`: an admin's, or a project maintainer's for "
                                "that project's members and audit. Tokens with role `read` never change anything."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


def docs_page(spec: dict[str, Any]) -> str:
    """A browsable page of the API (self-contained: no scripts, no external assets, so it works air-gapped)."""
    rows = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            params = ", ".join(f"{p['name']} ({p['in']})" for p in op.get("parameters", [])) or "-"
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            rows.append(f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op['summary'])}</td><td>{html.escape(params)}</td>"
                        f"<td><pre>{html.escape(json.dumps(body, indent=1)) if body else '-'}</pre></td></tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{spec['info']['title']}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border-bottom:1px solid #ddd;padding:.4em;"
            "vertical-align:top;text-align:left}pre{margin:0;font-size:.8em}</style></head><body>"
            f"<h1>{spec['info']['title']} {spec['info']['version']}</h1><p>{html.escape(spec['info']['description'])}"
            f" The machine-readable document is <a href='openapi.json'>openapi.json</a>.</p>"
            "<table><tr><th>method</th><th>path</th><th>what</th><th>parameters</th><th>body</th></tr>"
            + "".join(rows) + "</table></body></html>")
