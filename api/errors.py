"""One error body for the whole API, `{"detail": ..., "code": ...}`, and the request body size limit."""

from __future__ import annotations

import json
import re
import traceback
from typing import Any
from urllib.parse import unquote_to_bytes

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from insight.errors import DeskpilotError

log = structlog.get_logger(__name__)

# Domain error code -> HTTP status. Subclasses inherit their parent's status through the MRO walk below.
STATUS_BY_CODE: dict[str, int] = {
    "invalid_input": 422,
    "invalid_event_log": 422,
    "not_found": 404,
    "conflict": 409,
    "model_not_ready": 503,
    "model_artifact_error": 500,
    "index_unavailable": 503,
}

# HTTP status -> code, for errors raised by FastAPI / Starlette themselves (auth, routing, size limit).
CODE_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ClientGone(Exception):
    """The client closed the connection while its request waited for a slot: nothing is computed for it."""


class Overloaded(Exception):
    """The service sheds this request (its endpoint is at capacity): 503 `overloaded` with Retry-After."""

    code = "overloaded"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class ErrorBody(BaseModel):
    """The single error shape of every route."""

    detail: str
    code: str


# For OpenAPI: attach to routers as `responses=ERROR_RESPONSES`.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (401, 403, 404, 409, 413, 422, 500, 503)
}


def status_for(exc: DeskpilotError) -> int:
    """HTTP status of a domain error (nearest class in the MRO with a known code; 500 otherwise)."""
    for klass in type(exc).__mro__:
        code = getattr(klass, "code", None)
        if code in STATUS_BY_CODE:
            return STATUS_BY_CODE[code]
    return 500


def error_response(status: int, detail: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSONResponse in the one error shape."""
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    # "body" is where, not what: `tickets.0.subject` reads better than `body.tickets.0.subject`
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) if parts else "body"


def validation_detail(errors: list[Any]) -> str:
    """One line naming every bad field: `subject: String should have at most 1000 characters; ...`."""
    out: list[str] = []
    for err in errors[:20]:
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            # FastAPI puts the character offset where the field name would be.
            pos = loc[1] if len(loc) > 1 else "?"
            reason = (err.get("ctx") or {}).get("error", "")
            out.append(f"body: invalid JSON at character {pos}{f' ({reason})' if reason else ''}")
            continue
        out.append(f"{_loc(loc)}: {msg}")
    if len(errors) > 20:
        out.append(f"... and {len(errors) - 20} more")
    return "; ".join(out)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into `{"detail", "code"}`."""

    @app.exception_handler(DeskpilotError)
    async def _domain(request: Request, exc: DeskpilotError) -> JSONResponse:
        status = status_for(exc)
        if status == 500:
            log.warning("domain_error", code=exc.code, detail=exc.message, path=request.url.path)
        return error_response(status, exc.message, exc.code)

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, exc: ClientGone) -> JSONResponse:
        # Nobody reads this answer; 499 (the convention for "client closed request") keeps it apart in the metrics.
        return error_response(499, f"the client closed the connection before {exc} started", "client_gone")

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return error_response(503, exc.detail, exc.code, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_detail(list(exc.errors())), "invalid_input")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        code = CODE_BY_STATUS.get(exc.status_code, "http_error")
        return error_response(exc.status_code, detail, code, headers=getattr(exc, "headers", None))

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Every database connection is busy: the request is fine, the service is saturated; say when to retry.
        log.warning("db_pool_exhausted", path=request.url.path, error=str(exc).split(" (Background")[0])
        return error_response(503, "the database connection pool is exhausted; retry shortly (db_pool_size / "
                              "db_max_overflow)", "overloaded", headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A plain traceback string: the console renderer's rich traceback (with locals) takes seconds per error.
        log.error("unhandled_error", path=request.url.path, error=f"{type(exc).__name__}: {exc}",
                  traceback="".join(traceback.format_exception(exc)))
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log", "internal_error")


class _TooLarge(Exception):
    pass


# A JSON "\u0000" escape not itself escaped (an even number of backslashes before it), or a raw NUL byte.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)


def _has_nul(raw: bytes | str) -> bool:
    return ("\x00" in raw) if isinstance(raw, str) else (b"\x00" in raw or _JSON_NUL.search(raw) is not None)


class BodySizeLimit:
    """ASGI middleware refusing request bodies above `max_bytes` with 413, whether or not Content-Length is sent,
    and any request whose path, query or body holds a NUL character with 422.

    The body is read (at most `max_bytes` + one chunk) before the app sees it, so an oversize request never reaches
    a route and can never leave a half-written record. NUL is refused at the door because PostgreSQL cannot store
    it in a text column: the same request then gets the same answer on every database.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send, size: str) -> None:
        body = json.dumps(
            {"detail": f"request body {size} is over the limit of {self.max_bytes} bytes (max_body_bytes)", "code": "payload_too_large"}
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def _refuse_nul(self, send: Send, where: str) -> None:
        body = json.dumps({"detail": f"the request {where} contains a NUL character (\\u0000), which is not "
                           "allowed in any text", "code": "invalid_input"}).encode()
        await send({"type": "http.response.start", "status": 422,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if _has_nul(str(scope.get("path", ""))):
                await self._refuse_nul(send, "path")
                return
            if _has_nul(unquote_to_bytes(scope.get("query_string", b""))):
                await self._refuse_nul(send, "query")
                return
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._refuse(send, f"of {declared} bytes")
                    return
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._refuse(send, f"of more than {self.max_bytes} bytes")
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        # Text bodies only: an uploaded binary file (multipart, octet-stream) may hold NUL bytes legitimately.
        ctype = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), b"").lower()
        if (not ctype or b"json" in ctype or ctype.startswith(b"text/") or b"urlencoded" in ctype) and _has_nul(body):
            await self._refuse_nul(send, "body")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
