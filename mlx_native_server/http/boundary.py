"""The checks every request passes before a route sees it, in this order:

the Host must be one this server answers to (DNS rebinding), an `Origin`
must be allowed (a web page the user opens cannot drive the model), the API
key, then for a POST a JSON content type (a cross-site "simple" request
cannot start a generation) and a body within `max_body_bytes`, parsed by
`json_body`. Any refusal is JSON in the API's own shape, and the
connection is closed when the body was left unread.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from ..api.channel import encode_headers, send_json
from ..api.errors import ApiError, error_body, flavor_of
from ..api.streaming import ClientGone
from ..core import heap
from ..core.config import Settings
from .json_body import parse_json_body

log = logging.getLogger("mlx_native_server.http")

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
MAX_HEAD_BYTES = 32 * 1024  # request line plus headers; Claude Code sends about 2 KB
MAX_TARGET_BYTES = 8 * 1024  # the request target (path and query)


def _host_name(host: str) -> str:
    """'[::1]:8000' -> '::1', 'localhost:8000' -> 'localhost'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _listed(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def host_allowed(host: str | None, settings: Settings) -> bool:
    """DNS rebinding needs a name: loopback names, IP literals, the bound
    host and `allowed_hosts` are safe; any other name is refused."""
    if host is None:
        return True  # HTTP/1.0 without Host: no browser sends that
    name = _host_name(host)
    extra = [h.lower() for h in _listed(settings.allowed_hosts)]
    return (
        name in LOOPBACK_NAMES
        or _is_ip(name)
        or name == settings.host.lower()
        or name in extra
        or "*" in extra
    )


def origin_allowed(origin: str, settings: Settings) -> bool:
    allowed = _listed(settings.allowed_origins)
    if origin in allowed or "*" in allowed:
        return True
    try:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_NAMES
    except ValueError:
        return False


def _cors_headers(origin: str, settings: Settings) -> list[tuple[bytes, bytes]]:
    value = "*" if "*" in _listed(settings.allowed_origins) else origin
    return [
        (b"access-control-allow-origin", value.encode("latin-1")),
        (b"vary", b"Origin"),
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-allow-headers", b"*"),
        (b"access-control-expose-headers", b"Retry-After"),
    ]


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class Boundary:
    """The checks every request passes before a route sees it (module docstring)."""

    def __init__(self, app, inner: Callable, post_paths: set[str]):
        self.app = app
        self.inner = inner
        self.post_paths = post_paths  # others get their 404/405 with the body unread

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        path = scope["path"].rstrip("/") or "/"
        scope = {**scope, "path": path}
        flavor = flavor_of(path)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status_box = [0]
        cors: list = []

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                if cors:
                    message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        try:
            self._check_head(scope)
            self._check_host(headers.get("host"))
            cors = self._check_origin(headers.get("origin"))
            if scope["method"] == "OPTIONS":
                await send_wrapped(
                    {
                        "type": "http.response.start",
                        "status": 204,
                        "headers": [(b"allow", b"GET, POST, OPTIONS")],
                    }
                )
                await send_wrapped({"type": "http.response.body", "body": b""})
                return
            if path != "/health":
                self._check_auth(headers)
            if scope["method"] == "POST" and path in self.post_paths:
                scope["mns.body"] = await self._read_json(headers, receive)
            scope["mns.send"] = send_wrapped
            await self.inner(scope, receive, send_wrapped)
        except ClientGone:
            return
        except ApiError as e:
            body_unread = scope["method"] == "POST" and "mns.body" not in scope  # close: skip it
            extra = encode_headers(e.headers)
            if body_unread:
                extra.append((b"connection", b"close"))
            log.info("%s %s -> %d %s", scope["method"], path, e.status, e.message)
            await send_json(send_wrapped, e.status, error_body(e, flavor), extra)
        except Exception as e:  # the routes' own handler answered already, if it could
            if status_box[0]:
                log.debug("after a %d response: %r", status_box[0], e)
                return
            log.exception("unexpected error on %s %s", scope["method"], path)
            await send_json(
                send_wrapped,
                500,
                error_body(
                    ApiError(500, f"Internal error: {type(e).__name__}: {e}", "server_error"),
                    flavor,
                ),
            )
        finally:
            if self.app.metrics is not None:
                self.app.metrics.request_finished(path, status_box[0])

    @staticmethod
    def _check_head(scope) -> None:
        """uvicorn's parser limits a head that arrives in pieces; this also
        catches one that arrived whole."""
        target = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
        if target > MAX_TARGET_BYTES:
            raise ApiError(
                414,
                f"The request target is {target} bytes, more than the "
                f"{MAX_TARGET_BYTES}-byte limit.",
            )
        size = target + sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if size > MAX_HEAD_BYTES:
            raise ApiError(
                431,
                f"The request headers are {size} bytes, more than the {MAX_HEAD_BYTES}-byte limit.",
            )

    def _check_host(self, host: str | None) -> None:
        if not host_allowed(host, self.app.settings):
            raise ApiError(
                403,
                f"This server does not answer to the host name '{host}'; "
                "add it to allowed_hosts to allow it.",
                "permission_error",
            )

    def _check_origin(self, origin: str | None) -> list:
        """The CORS headers a request from web page `origin` gets (none
        without an Origin); 403 for an origin that is not allowed."""
        if origin is None:
            return []
        if not origin_allowed(origin, self.app.settings):
            raise ApiError(
                403,
                f"Requests from the web origin '{origin}' are not allowed; "
                "add it to allowed_origins to allow them.",
                "permission_error",
            )
        return _cors_headers(origin, self.app.settings)

    def _check_auth(self, headers: dict[str, str]) -> None:
        key = self.app.settings.api_key
        if not key:
            return
        given = headers.get("x-api-key") or ""
        auth = headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(
                401,
                "Invalid or missing API key (send 'Authorization: Bearer KEY' or 'x-api-key: KEY').",
                "authentication_error",
                code="invalid_api_key",
            )

    async def _read_json(self, headers: dict[str, str], receive) -> dict:
        if not _is_json(headers.get("content-type", "")):
            raise ApiError(
                415,
                "Send the request body as JSON with 'Content-Type: application/json'.",
                code="unsupported_media_type",
            )
        length = headers.get("content-length")
        limit = self.app.settings.max_body_bytes
        if length is None and "chunked" not in headers.get("transfer-encoding", "").lower():
            raise ApiError(411, "A Content-Length header is required.")
        if length is not None and int(length) > limit:
            raise ApiError(
                413,
                f"Request body of {length} bytes is larger than the {limit}-byte limit.",
                "request_too_large",
            )
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                raise ApiError(
                    413, f"Request body is larger than the {limit}-byte limit.", "request_too_large"
                )
            if not message.get("more_body"):
                break
        if size >= heap.LARGE_BODY_BYTES and self.app.heap is not None:
            self.app.heap.large_body()
        return parse_json_body(chunks[0] if len(chunks) == 1 else b"".join(chunks))
