"""The studio's routers: every route authenticated by `x-api-key`, request validation answered in the studio's error shape."""
from __future__ import annotations

import re
import typing
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.common.limits import MAX_INT_PARAM, count_refusal
from helpers.localcloud.studio.auth import require_studio

# a union member's tag in a validation error's location (`BoxesBody`, `list[Box]`), not a field
_UNION_TAG = re.compile(r"^(?:[A-Z]\w*|\w+\[.*\])$")


def field_of(loc: tuple[Any, ...]) -> str:
    """`("body", "boundingBoxes", 0, "x")` -> `boundingBoxes[0].x`; `("query", "labeled")` -> `labeled`."""
    parts = list(loc[1:])
    if loc[:1] == ("body",) and parts and isinstance(parts[0], str) and _UNION_TAG.match(parts[0]):
        parts = parts[1:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validation_error(exc: RequestValidationError) -> ApiError:
    """The first problem of a request that does not match its schema, as a 400 naming the field."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = tuple(first.get("loc", ()))
    kind = first.get("type", "")
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", first.get("msg", ""))
        return ApiError(400, f"malformed JSON body: {detail}", "body")
    field = field_of(loc) or ("body" if loc[:1] == ("body",) else "request")
    if kind == "missing":
        if field == "body":
            return ApiError(400, "the request body is empty; send a JSON object", "body")
        return ApiError(400, f"{field} is required", field)
    if kind == "extra_forbidden":
        return ApiError(400, f"{field} is not a field of this request; see /openapi.json", field)
    return ApiError(400, f"{field}: {first.get('msg', 'invalid value')}", field)


def _int_params(route: APIRoute) -> list[tuple[str, str]]:
    """(name, "path" | "query") of the route's integer parameters."""
    out = []
    for source, fields in (("path", route.dependant.path_params), ("query", route.dependant.query_params)):
        for f in fields:
            ann = f.field_info.annotation
            if ann is int or (int in typing.get_args(ann) and set(typing.get_args(ann)) <= {int, type(None)}):
                out.append((f.alias, source))
    return out


def _out_of_range(raw: str) -> bool:
    digits = raw.strip().lstrip("+-")
    return digits.isdigit() and (len(digits) > 19 or int(digits) > MAX_INT_PARAM)


def check_int_params(request: Request, params: list[tuple[str, str]]) -> None:
    """400 naming the parameter when an integer id is beyond what the store keeps (SQLite's 64-bit INTEGER)."""
    for name, source in params:
        raw = (request.path_params if source == "path" else request.query_params).get(name)
        if isinstance(raw, str) and _out_of_range(raw):
            count_refusal("int_param")
            raise ApiError(400, f"{name}: {raw[:24]}{'...' if len(raw) > 24 else ''} is out of range (at most "
                                f"{MAX_INT_PARAM}); no such id exists", name)


class StudioRoute(APIRoute):
    """A route whose request-validation errors are the studio's 400 (`{success: false, error, field}`),
    and whose integer parameters are refused (400) beyond the store's range before anything reads them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        ints = _int_params(self)

        async def route(request: Request) -> Response:
            check_int_params(request, ints)
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise validation_error(exc) from None

        return route


def studio_router(**kw: Any) -> APIRouter:
    """An `APIRouter` for studio endpoints: `x-api-key` required (`require_studio`), studio errors.

    A JSON body sent without a Content-Type header is read as JSON (`strict_content_type=False`),
    as the studio always read request bodies.
    """
    return APIRouter(route_class=StudioRoute, dependencies=[Depends(require_studio)], strict_content_type=False, **kw)
