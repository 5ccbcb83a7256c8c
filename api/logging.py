"""Structured logging set-up (structlog over the standard library), with secrets scrubbed from every record.

Tracebacks are rendered plainly, without local variables: a rich traceback with locals prints the ASGI scope of a
failing request, headers and API keys included. Every record then passes `redact_secrets`, which masks deskpilot
API keys, bearer tokens and `X-API-Key` / `Authorization` / `Cookie` header values wherever they appear (message,
fields, the formatted traceback), so a secret that reaches a log call by any path is still never written.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog

MASK = "[REDACTED]"
# deskpilot keys (api.auth.KEY_PREFIX), bearer tokens, and the values of headers that carry credentials, in the
# shapes they take in logs: `X-API-Key: v`, `x-api-key=v`, `(b'x-api-key', b'v')`, `"authorization": "v"`.
_HEADER = r"(?:x-api-key|authorization|proxy-authorization|cookie|set-cookie)"
_SECRET_PATTERNS = (
    re.compile(r"dpk_[A-Za-z0-9_\-]{8,}"),
    # a quoted value after a credential header's name: everything up to the closing quote
    re.compile(r"(?i)(['\"]?" + _HEADER + r"['\"]?\s*[:=,]\s*b?(['\"]))(?:(?!\2).)*"),
    # an unquoted value: the optional scheme and the token after it
    re.compile(r"(?i)(\b" + _HEADER + r"\s*[:=]\s*)(?:(?:bearer|basic|token)\s+)?[^\s,;)}]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
)
_SECRET_KEYS = frozenset({"x-api-key", "authorization", "cookie", "set-cookie", "password", "api-key", "secret",
                          "token", "pseudonym-key", "bootstrap-admin-key"})


def scrub(text: str) -> str:
    """`text` with every credential it contains replaced by [REDACTED]."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text.replace(MASK + MASK, MASK)


def _scrub_value(key: str, value: Any, depth: int = 0) -> Any:
    if key.lower().replace("_", "-") in _SECRET_KEYS and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes):
        return scrub(value.decode("utf-8", "replace"))
    if depth < 4 and isinstance(value, dict):
        return {k: _scrub_value(str(k), v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, (list, tuple)):
        return type(value)(_scrub_value("", v, depth + 1) for v in value) if isinstance(value, list) else tuple(
            _scrub_value("", v, depth + 1) for v in value)
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask credentials in every field of a record (after exceptions are formatted)."""
    for key in list(event_dict):
        if key.startswith("_"):  # structlog's own bookkeeping (the stdlib record, the logger)
            continue
        event_dict[key] = _scrub_value(key, event_dict[key])
    return event_dict


def configure_logging(level: str = "INFO", json: bool = False, stream: IO[str] | None = None) -> None:
    """Route stdlib and structlog records through one renderer: console for people, JSON for machines.

    Records go to `stream` (default: standard error).
    """
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json
        else structlog.dev.ConsoleRenderer(colors=stream is None and sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback)
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    # exc_info becomes a plain "exception" string first, so the scrubber sees the traceback text too.
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        redact_secrets,
        renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "chromadb", "sentence_transformers", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
