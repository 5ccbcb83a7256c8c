"""The web app: server-rendered pages (Jinja2 + htmx) over the same service functions the JSON routes call.

Each user's pages live in their own module with a `router` (built by `core.web_router`) and a `NAV` list of
`core.NavItem`; a module may also set `HOME = {role: path}` for where a role lands after signing in. Add a module
by listing it in `PAGE_MODULES` (order = order in the navigation).
"""

from __future__ import annotations

import importlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

PAGE_MODULES: list[str] = [
    "api.web.signin",
    "api.web.agent",
    "api.web.analyst",
    "api.web.knowledge",
    "api.web.admin",
]

STATIC_URL = "/assets"


def _wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/v1/", "/docs", "/redoc", "/openapi", "/metrics", "/healthz", "/readyz", "/static/")):
        return False
    return "text/html" in request.headers.get("accept", "")


def mount(app: FastAPI) -> None:
    """Include every page module's router, serve the assets, and answer browsers' 404s with the product's page."""
    from api.web import core

    nav: list[core.NavItem] = []
    home: dict[str, str] = {}
    for name in PAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a listed module not written yet
                continue
            raise
        app.include_router(module.router)
        nav.extend(getattr(module, "NAV", []))
        for role, path in getattr(module, "HOME", {}).items():
            home.setdefault(role, path)
    app.state.web_nav, app.state.web_home = nav, home
    app.mount(STATIC_URL, StaticFiles(directory=str(core.HERE / "static")), name="web-assets")

    json_http = app.exception_handlers.get(StarletteHTTPException)

    async def _http(request: Request, exc: Any) -> Any:
        if _wants_html(request) and exc.status_code in (404, 405):
            response = core.error_page(request, exc.status_code,
                                       "There is no page at this address." if exc.status_code == 404
                                       else "This page does not take that kind of request.")
            core._save_session(request, response)
            return response
        assert json_http is not None
        return await json_http(request, exc)  # type: ignore[misc]  # the app's own async handler

    app.add_exception_handler(StarletteHTTPException, _http)
