"""One error body for the whole API, `{"detail": ..., "code": ...}`, and the request body size limit."""

from __future__ import annotations

import json
import re
import traceback
from typing import Any

import anyio.lowlevel
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError as DBDataError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import DeskpilotError
from core.ids import MAX_DB_INT

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


_OUT_OF_RANGE = ("a number in the request is out of range: ids, offsets and counts are stored as 64-bit integers "
                 f"(at most {MAX_DB_INT})")


def _out_of_db_range(exc: BaseException) -> bool:
    """Did the database driver refuse a number too large for an integer column (SQLite's OverflowError,
    PostgreSQL's numeric_value_out_of_range)? Any other overflow stays a 500: it is a bug, not bad input."""
    if isinstance(exc, OverflowError):
        return "too large to convert to SQLite INTEGER" in str(exc)
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == "22003" or getattr(orig, "pgcode", None) == "22003"


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
        from api.responses import fixed_value_miss

        allow = fixed_value_miss(request, list(exc.errors()))
        if allow is not None:  # e.g. POST /articles/1/versions, where only GET is served
            return error_response(405, f"{request.method} is not allowed here; allowed: {allow}",
                                  "method_not_allowed", headers={"Allow": allow})
        return error_response(422, validation_detail(list(exc.errors())), "invalid_input")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        code = CODE_BY_STATUS.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; a path may have several (GET and PATCH).
            from api.responses import allowed_methods

            headers = {**(headers or {}), "Allow": allowed_methods(request)}
            detail = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # Bytes that are not text are invalid JSON: the same 422 as any other unparseable body.
            return error_response(422, f"body: invalid JSON: not UTF-8 text at byte {exc.__cause__.start}",
                                  "invalid_input")
        if exc.status_code == 400 and exc.__cause__ is not None:
            detail = f"body: could not be parsed ({type(exc.__cause__).__name__})"
        return error_response(exc.status_code, detail, code, headers=headers)

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Every database connection is busy: the request is fine, the service is saturated; say when to retry.
        log.warning("db_pool_exhausted", path=request.url.path, error=str(exc).split(" (Background")[0])
        return error_response(503, "the database connection pool is exhausted; retry shortly (db_pool_size / "
                              "db_max_overflow)", "overloaded", headers={"Retry-After": "1"})

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        if _out_of_db_range(exc):
            return error_response(422, _OUT_OF_RANGE, "invalid_input")
        return await _unexpected(request, exc)

    @app.exception_handler(DBDataError)
    async def _db_data(request: Request, exc: DBDataError) -> JSONResponse:
        if _out_of_db_range(exc):
            return error_response(422, _OUT_OF_RANGE, "invalid_input")
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A plain traceback string: the console renderer's rich traceback (with locals) takes seconds per error.
        log.error("unhandled_error", path=request.url.path, error=f"{type(exc).__name__}: {exc}",
                  traceback="".join(traceback.format_exception(exc)))
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log", "internal_error")


class _TooLarge(Exception):
    pass


# A JSON "\u0000" escape not itself escaped (an even number of backslashes before it, kept as group 1).
_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
# What a NUL becomes: U+FFFD, the Unicode replacement character, one character for one, so a text is exactly as
# long after the door as the caller sent it and every length rule of the schema judges what was sent.
REPLACEMENT = "\ufffd"
_URL_REPLACEMENT = b"%EF%BF%BD"


def replace_nul_json(raw: bytes) -> bytes:
    """JSON text with each `\\u0000` escape written as `\\ufffd` (the same number of bytes; every other escape is
    left as it is); a raw NUL byte stays, since it makes the text invalid JSON (422) wherever it is."""
    return _JSON_NUL.sub(rb"\1\\ufffd", raw)


def _replace_nul_url(raw: bytes) -> bytes:
    # "%00" is always an escaped NUL: a literal "%" is sent as "%25".
    return raw.replace(b"%00", _URL_REPLACEMENT).replace(b"\x00", _URL_REPLACEMENT)


class BodySizeLimit:
    """ASGI middleware refusing request bodies above `max_bytes` with 413, whether or not Content-Length is sent,
    and replacing NUL characters in the path, the query and text bodies by U+FFFD.

    The body is read (at most `max_bytes` + one chunk) before the app sees it, so an oversize request never reaches
    a route and can never leave a half-written record. NUL is replaced at the door because PostgreSQL cannot store
    it in a text column: the same request is then stored the same way on every database, a request that any other
    character makes valid is not refused for one the schema cannot express, and, since one character stands for
    one, a text over a length limit is refused as sent (removing the NUL would let it through one short).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, upload_paths: tuple[str, ...] = (),
                 upload_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Log uploads (the analyst pages) may be larger than any API body; only POSTs to these path prefixes.
        self.upload_paths = upload_paths
        self.upload_max_bytes = upload_max_bytes or max_bytes

    async def _refuse(self, send: Send, size: str, limit: int | None = None) -> None:
        setting = "max_body_bytes" if limit is None else "web_upload_max_bytes"
        body = json.dumps(
            {"detail": f"request body {size} is over the limit of {limit or self.max_bytes} bytes ({setting})",
             "code": "payload_too_large"}
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, query = str(scope.get("path", "")), scope.get("query_string", b"")
            if "\x00" in path or b"%00" in query or b"\x00" in query:
                scope = {**scope, "path": path.replace("\x00", REPLACEMENT), "query_string": _replace_nul_url(query)}
                if "raw_path" in scope:
                    scope["raw_path"] = _replace_nul_url(scope["raw_path"])
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        upload = scope.get("method") == "POST" and str(scope.get("path", "")).startswith(self.upload_paths)
        limit = self.upload_max_bytes if upload else self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await self._refuse(send, f"of {declared} bytes", limit if upload else None)
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
            if total > limit:
                await self._refuse(send, f"of more than {limit} bytes", limit if upload else None)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        # Text bodies only: an uploaded binary file (multipart, octet-stream) may hold NUL bytes legitimately.
        ctype = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), b"").lower()
        clean = body
        if not ctype or b"json" in ctype:
            clean = replace_nul_json(body)
        elif b"urlencoded" in ctype:
            clean = _replace_nul_url(body)
        elif ctype.startswith(b"text/"):
            clean = body.replace(b"\x00", REPLACEMENT.encode())
        if len(clean) != len(body):
            scope = {**scope, "headers": [(k, str(len(clean)).encode() if k == b"content-length" else v)
                                          for k, v in scope.get("headers", ())]}
        body = clean
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                # A caller that only peeks (Request.is_disconnected() receives in a cancelled scope) is cancelled
                # here, before it can take the body away from the endpoint that reads it next.
                await anyio.lowlevel.checkpoint()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
