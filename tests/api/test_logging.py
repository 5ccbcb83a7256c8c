"""Secrets never reach the log: an unhandled error's traceback, uvicorn's exception record and structured fields."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from api.deps import get_decide
from api.logging import MASK, configure_logging, scrub
from tests.api.conftest import Api, new_id


@pytest.fixture(params=[False, True], ids=["console", "json"])
def server_log(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """The production log set-up (console and JSON renderers), writing to a buffer; restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buf = io.StringIO()
    configure_logging("INFO", json=request.param, stream=buf)
    yield buf
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_a_500_logs_no_api_key(api: Api, server_log: io.StringIO) -> None:
    secret = api.keys["helpdesk"]

    def broken_decide(request_headers: str = secret, **_: object) -> None:  # the key is a local of the frame
        raise RuntimeError(f"decide failed while the request carried {request_headers}")

    api.app.dependency_overrides[get_decide] = lambda: broken_decide
    r = api.client.post("/v1/tickets/route", headers={**api.h("helpdesk"), "X-API-Key": secret},
                        json={"ticket_id": new_id(), "subject": "Refund", "body": "please refund my order"})
    assert r.status_code == 500 and r.json()["code"] == "internal_error"
    assert secret not in r.text
    err = server_log.getvalue()
    assert "unhandled_error" in err and "RuntimeError" in err  # the failure itself is still logged
    assert secret not in err and secret[4:20] not in err
    assert MASK in err


def test_uvicorn_style_exception_record_is_scrubbed(server_log: io.StringIO) -> None:
    key = "dpk_" + "q" * 40
    scope = {"type": "http", "headers": [(b"x-api-key", key.encode()), (b"authorization", b"Bearer tok.en.12345678"),
                                         (b"cookie", b"session=abcdef0123456789")]}
    try:
        raise ValueError(f"bad scope {scope}")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    structlog.get_logger("t").error("auth_failed", authorization="Basic Zm9vOmJhcg==", x_api_key="abcdef123456",
                                    detail={"headers": {"X-API-Key": "zzzzzzzz9999"}})
    err = server_log.getvalue()
    for leaked in (key, "tok.en.12345678", "abcdef0123456789", "Zm9vOmJhcg==", "abcdef123456", "zzzzzzzz9999"):
        assert leaked not in err, leaked
    assert "Exception in ASGI application" in err and "ValueError" in err


@pytest.mark.parametrize(("text", "kept"), [
    ("authorization failed for this ticket", "authorization failed for this ticket"),
    ("refund of 120 EUR for order 55120", "refund of 120 EUR for order 55120"),
])
def test_scrub_leaves_ordinary_text(text: str, kept: str) -> None:
    assert scrub(text) == kept
