"""Process settings of a serving API: BLAS threads capped (requests compute concurrently) and the start-up heap
frozen out of the garbage collector's scans, both given back on shutdown."""

from __future__ import annotations

import gc

import pytest
from threadpoolctl import threadpool_info

from api.settings import Settings
from tests.api.conftest import new_id, start_api


def _blas_threads() -> list[int]:
    return [int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]


def test_blas_threads_are_capped_while_serving_and_restored(tmp_path, tiny_bundle):
    before = _blas_threads()
    if not before or max(before) == 1:
        pytest.skip("one BLAS thread already: nothing to cap on this machine")
    settings = Settings(home=tmp_path, database_url="sqlite://", blas_threads=1)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        assert _blas_threads() == [1] * len(before)
        r = client.post("/v1/tickets/route", headers={"Authorization": f"Bearer {keys['helpdesk']}"},
                        json={"ticket_id": new_id(), "subject": "Refund", "body": "I want my money back"})
        assert r.status_code == 201, r.text
    finally:
        client.__exit__(None, None, None)
    assert _blas_threads() == before


def test_blas_threads_left_alone_when_unset(tmp_path, tiny_bundle):
    before = _blas_threads()
    settings = Settings(home=tmp_path, database_url="sqlite://", blas_threads=None)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        assert _blas_threads() == before
    finally:
        client.__exit__(None, None, None)


def test_start_up_objects_are_frozen_out_of_gc_scans_while_serving(tmp_path, tiny_bundle):
    settings = Settings(home=tmp_path, database_url="sqlite://")
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        # The models and libraries loaded at start-up: a full collection no longer walks them.
        assert gc.get_freeze_count() > 10_000
        r = client.post("/v1/tickets/route", headers={"Authorization": f"Bearer {keys['helpdesk']}"},
                        json={"ticket_id": new_id(), "subject": "Invoice", "body": "Send me a copy of my invoice"})
        assert r.status_code == 201, r.text
    finally:
        client.__exit__(None, None, None)
    assert gc.get_freeze_count() == 0
