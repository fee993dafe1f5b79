"""The ASGI application: the boundary (boundary.py) around Starlette's
router (routes.py), with every error in the API's own shape."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api.errors import ApiError, error_body, flavor_of
from .app import App
from .boundary import Boundary
from .routes import ROUTES, TEST_ROUTES

log = logging.getLogger("mlx_native_server.http")

# Each handler takes the exception class it is registered for; Starlette's own
# `ExceptionHandler` type says `Exception`, which a narrower handler cannot meet
# (parameters are contravariant), so the table is typed with `Any` there.
_Handlers = dict[Any, Callable[[Request, Any], Awaitable[Response]]]


def _error_response(request: Request, e: ApiError) -> Response:
    flavor = flavor_of(request.url.path)
    return JSONResponse(error_body(e, flavor), e.status, headers=e.headers)


async def _api_error(request: Request, e: ApiError) -> Response:
    log.log(
        logging.ERROR if e.status >= 500 else logging.INFO,
        "%s %s -> %d %s",
        request.method,
        request.url.path,
        e.status,
        e.message,
    )
    return _error_response(request, e)


async def _http_error(request: Request, e: HTTPException) -> Response:
    path = request.url.path
    headers = dict(e.headers or {})
    if e.status_code == 405:
        error = ApiError(
            405,
            f"{request.method} is not allowed on {path}; use {headers.get('Allow')}.",
            headers=headers,
        )
    elif e.status_code == 404:
        error = ApiError(404, f"Unknown path {path}.", "not_found_error")
    else:
        error = ApiError(e.status_code, str(e.detail), headers=headers)
    return await _api_error(request, error)


async def _unexpected(request: Request, e: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error_response(
        request, ApiError(500, f"Internal error: {type(e).__name__}: {e}", "server_error")
    )


def build_asgi(app: App) -> Boundary:
    """The whole ASGI application: the boundary around the routes."""
    routes = ROUTES + (TEST_ROUTES if app.test_hooks else [])
    handlers: _Handlers = {
        ApiError: _api_error,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    starlette = Starlette(routes=routes, exception_handlers=handlers)
    starlette.state.mns = app
    return Boundary(app, starlette, {r.path for r in routes if "POST" in (r.methods or ())})
