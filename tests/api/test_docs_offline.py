"""The API docs work offline: /docs and /redoc load their assets from this server, never from a CDN."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import Api


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_use_only_local_assets(api: Api, page: str) -> None:
    r = api.client.get(page)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text) + re.findall(r"""url: ?['"]([^'"]+)['"]""", r.text)
    assert refs, r.text[:500]
    assert not [u for u in refs if u.startswith(("http:", "https:", "//"))], refs
    for url in refs:
        asset = api.client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
    assert api.client.get("/openapi.json").json()["info"]["title"] == "deskpilot"
