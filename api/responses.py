"""The HTTP contract as the OpenAPI schema states it: every status a route can send documented with the one error
body, `Allow` listing every method of a path (a fixed-value path segment that does not match is a 405 when other
routes serve the path), request models' whitespace stripping stated as a pattern.

`install_contract(app)` runs once after the views are mounted (api/app.py).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from enum import Enum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from starlette.routing import compile_path

from api.errors import ErrorBody
from routing.models import TEXT_PATTERN

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "Seconds after which a retry has a fair chance", "required": False,
                                "schema": {"type": "integer", "minimum": 1}}}


def api_routes(routes: Any) -> Iterator[tuple[str, str, APIRoute]]:
    """(full path template, full path with convertors, route) of every FastAPI route, routers included under their
    prefixes."""
    for ctx in iter_route_contexts(routes):
        route = ctx.original_route
        if isinstance(route, APIRoute):
            yield ctx.path_format or route.path_format, ctx.path or route.path, route


def dependencies(dependant: Any) -> Iterator[Any]:
    """Every sub-dependant of a route's dependant, depth first."""
    for sub in getattr(dependant, "dependencies", ()):
        yield sub
        yield from dependencies(sub)


def _sheds(route: APIRoute) -> bool:
    return any(getattr(d.call, "sheds", None) for d in dependencies(route.dependant))


def _has_params(route: APIRoute) -> bool:
    d = route.dependant
    return bool(d.path_params or d.query_params or d.header_params or d.cookie_params or d.body_params) or any(
        sub.path_params or sub.query_params or sub.header_params or sub.cookie_params or sub.body_params
        for sub in dependencies(d)
    )


def statuses_for(route: APIRoute) -> dict[str, dict[str, Any]]:
    """The error statuses a route can answer besides the ones its view documents, by what the route does."""
    out: dict[str, dict[str, Any]] = {
        "500": _error("an unexpected failure (`internal_error`); the server log has the traceback")}
    methods = set(route.methods or ())
    if _has_params(route) or methods & _WRITE_METHODS:
        out["422"] = _error("a parameter or the body is invalid (`invalid_input`); `detail` names each bad field")
    if methods & _WRITE_METHODS:
        out["413"] = _error("the request body is over `max_body_bytes` (`payload_too_large`)")
    if route.body_field is not None:
        out["400"] = _error("the body could not be read at all (`bad_request`), e.g. nesting too deep to parse")
    if _sheds(route):
        out["503"] = _error("at capacity (`overloaded`, with Retry-After), or no model / index is available",
                            headers=_RETRY_AFTER)
        out["499"] = _error("the client closed the connection while the request waited for a slot "
                            "(`client_gone`; nothing was computed, and nobody reads this answer)")
    return out


def _models(annotation: Any, seen: dict[str, type[BaseModel]]) -> None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation.__name__ in seen:
            return
        seen[annotation.__name__] = annotation
        for field in annotation.model_fields.values():
            _models(field.annotation, seen)
        return
    for arg in typing.get_args(annotation):
        _models(arg, seen)


def _needs_text(schema: dict[str, Any]) -> None:
    for option in [schema, *schema.get("anyOf", ())]:
        if (option.get("type") == "string" and option.get("minLength", 0) >= 1
                and not {"pattern", "enum", "format", "const"} & option.keys()):
            option["pattern"] = TEXT_PATTERN


def state_stripped_whitespace(app: FastAPI, components: dict[str, Any]) -> None:
    """A request model that strips whitespace refuses "  " where it needs one character: say so (the pattern
    `routing.models.TEXT_PATTERN`)."""
    models: dict[str, type[BaseModel]] = {}
    for _, _, route in api_routes(app.routes):
        for param in route.dependant.body_params:
            _models(param.field_info.annotation, models)
    for name, model in models.items():
        if "_strip_text" not in model.__pydantic_decorators__.field_validators:
            continue
        for key in (name, f"{name}-Input"):
            for prop in components.get(key, {}).get("properties", {}).values():
                _needs_text(prop)


def document_error_responses(app: FastAPI) -> None:
    """Make `app.openapi()` list, for every operation, each error status the service can send with `ErrorBody`."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
        state_stripped_whitespace(app, components)
        for path, _, route in api_routes(app.routes):
            if not route.include_in_schema:
                continue
            ops = schema.get("paths", {}).get(path, {})
            extra = statuses_for(route)
            for method in route.methods or ():
                op = ops.get(method.lower())
                if op is None:
                    continue
                responses = op.setdefault("responses", {})
                for status, spec in extra.items():
                    if status not in responses:
                        responses[status] = spec
                    elif status == "503" and "headers" in spec:
                        responses[status].setdefault("headers", spec["headers"])
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def allowed_methods(request: Request, *, besides: Any = None) -> str:
    """Every method some route serves at this request's path (for the `Allow` header of a 405); `besides`: a route
    left out (one whose fixed-value path segment refused this path).

    OpenAPI's matching rule: a concrete path is matched before a templated one, so where a route's path has no
    parameters and is this path (`/v1/tickets/route`), only such routes count, not `/v1/tickets/{ticket_id}`."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    concrete: set[str] = set()
    for _, template, route in api_routes(request.app.router.routes):
        if route is besides or not route.methods:
            continue
        match = compile_path(template)[0].match(path)
        if match is not None and all(_fits(param, match.groupdict().get(param.name))
                                     for param in route.dependant.path_params):
            methods |= set(route.methods)
            if "{" not in template:
                concrete |= set(route.methods)
    return ", ".join(sorted(concrete or methods))


def _fits(param: Any, value: str | None) -> bool:
    """False when `value` is not a valid value of the path parameter (a fixed value missed, `deliveries` for an
    integer id): that route does not serve this path."""
    annotation = param.field_info.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return value in {str(v) for v in typing.get_args(annotation)}
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return value in {str(m.value) for m in annotation}
    try:
        _, errors = param.validate(value, {}, loc=("path", param.name))
    except Exception:  # a parameter type FastAPI cannot validate alone: count the route in
        return True
    return not errors


def fixed_value_miss(request: Request, errors: list[Any]) -> str | None:
    """The `Allow` value when a request failed only on its path parameters and other routes serve this path:
    `POST /articles/1/versions` hit `POST /articles/{id}/{action}` (action in publish, unpublish, archive) and
    `DELETE /webhooks/deliveries` hit `DELETE /webhooks/{id}` (an integer), but only GET is served there: a 405."""
    if not errors or not all(tuple(e.get("loc", ()))[:1] == ("path",) for e in errors):
        return None
    allow = allowed_methods(request, besides=request.scope.get("route"))
    return allow or None


def install_contract(app: FastAPI) -> None:
    """Document the error responses (call after every view is mounted)."""
    document_error_responses(app)
