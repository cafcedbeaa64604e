"""The admin REST API under ``/admin/api/v1``: routing, authentication, input checks, error statuses.

What each endpoint does lives in ``endpoints.py`` (the table) and ``service.py`` (the operations,
with their permission rules and admin events). Operation errors map to HTTP statuses here, in one
place, by their type.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from hubproxy.admin import schema
from hubproxy.admin.endpoints import ENDPOINTS, Call, Endpoint, Text
from hubproxy.admin.openapi import PREFIX, docs_page, openapi
from hubproxy.admin.service import Actor, AdminService
from hubproxy.auth.authenticator import Authenticator
from hubproxy.auth.identity import Authenticated
from hubproxy.errors import OperationError
from hubproxy.limits import BodyTooLarge, read_body

log = logging.getLogger(__name__)

#: Largest admin request body.
MAX_BODY = 1024 * 1024


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AdminApi:
    """Dispatches ``/admin/api/v1/...`` to the endpoint table."""

    def __init__(self, service: AdminService, auth: Authenticator, docs_public: bool = True) -> None:
        self.service = service
        self.auth = auth
        #: Whether the OpenAPI document and docs page answer without a token.
        self.docs_public = docs_public

    async def __call__(self, request: Request) -> Response:
        path = request.url.path[len(PREFIX):] if request.url.path.startswith(PREFIX) else None
        try:
            if path in ("/openapi.json", "/docs") and request.method in ("GET", "HEAD"):
                if not self.docs_public:
                    await self._caller(request)
                spec = openapi()
                return JSONResponse(spec) if path == "/openapi.json" else HTMLResponse(docs_page(spec))
            if path is None:
                raise _HttpError(404, "not found")
            endpoint, params = _route(request.method, path)
            who = await self._caller(request)
            call = Call(self.service, Actor.of(who), params, _query(request, endpoint),
                        await _body(request, endpoint))
            result = await asyncio.to_thread(endpoint.handler, call)
        except _HttpError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except OperationError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except BodyTooLarge as exc:
            return JSONResponse({"error": str(exc)}, status_code=413)
        except Exception:
            log.exception("admin API failed on %s %s", request.method, request.url.path)
            return JSONResponse({"error": "hubproxy failed to answer this request"}, status_code=500)
        if isinstance(result, Text):
            return Response(result.body, media_type=result.media_type)
        return JSONResponse(result, status_code=endpoint.status)

    async def _caller(self, request: Request) -> Authenticated:
        header = request.headers.get("authorization", "")
        who = await self.auth.authenticate(header[7:].strip()) if header[:7].lower() == "bearer " else None
        if who is None:
            raise _HttpError(401, "a valid hubproxy token is required")
        return who


def _route(method: str, path: str) -> tuple[Endpoint, dict[str, str]]:
    allowed = False
    for endpoint in ENDPOINTS:
        m = endpoint.pattern.match(path)
        if m:
            if endpoint.method == method:
                params = m.groupdict()
                for name, value in params.items():
                    schema.check(value, schema.STR, name)
                return endpoint, params
            allowed = True
    raise _HttpError(405 if allowed else 404, "method not allowed" if allowed else "not found")


def _query(request: Request, endpoint: Endpoint) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for name, value in request.query_params.items():
        if name not in endpoint.query:
            raise _HttpError(400, f"unknown query parameter {name!r}")
        query[name] = schema.query_value(name, value, endpoint.query[name])
    return query


async def _body(request: Request, endpoint: Endpoint) -> dict[str, Any]:
    if endpoint.body is None:
        return {}
    raw = await read_body(request, MAX_BODY)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise _HttpError(400, "the body must be JSON") from None
    schema.check(body, endpoint.body, "body")
    return body
