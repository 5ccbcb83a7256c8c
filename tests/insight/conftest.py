"""Fixtures the mining tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from insight.mining.distributed import connect


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A local dask.distributed cluster of 2 workers (threads), one per test module."""
    c = connect(workers=2, processes=False)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()
