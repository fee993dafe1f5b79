"""The HTTP layer: routing, body limits, auth, and JSON errors for everything.

Front ends (openai_chat, anthropic_api, responses_api, …) register handlers
with `@route(method, path, flavor)`; a handler gets the request handler and
the parsed JSON body and raises ApiError for anything the client got wrong.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from .api_errors import ApiError, context_overflow, error_body
from .config import Settings
from .engine import ChatRequest, ContextOverflow, Engine, EngineUnavailable, PrefillCancelled
from .generation import Generation
from .sse import ClientGone

log = logging.getLogger("mlx_native_server.http")


@dataclass(frozen=True)
class Route:
    handler: Callable[["Handler", Any], None]
    flavor: str  # error shape: "openai" or "anthropic"
    needs_body: bool


ROUTES: dict[tuple[str, str], Route] = {}


def route(method: str, *paths: str, flavor: str = "openai"):
    """Register a handler for `method` on each of `paths`."""
    def register(fn):
        for path in paths:
            ROUTES[(method, path)] = Route(fn, flavor, method == "POST")
        return fn
    return register


def flavor_of(path: str) -> str:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


@dataclass
class App:
    """What handlers share: settings, the engine, and the requests in flight."""

    settings: Settings
    engine: Engine
    test_hooks: bool = False
    started: float = field(default_factory=time.time)
    draining: bool = False
    requests_served: int = 0
    active: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def model_names(self) -> set[str]:
        s = self.settings
        return {s.served_model_id, s.model, str(s.model_path), s.model_path.name}

    def check_model(self, requested: Any, flavor: str = "openai") -> None:
        if requested is None or requested in self.model_names():
            return
        if not isinstance(requested, str):
            raise ApiError(400, "'model' must be a string.", param="model")
        if flavor == "anthropic" and requested.startswith("claude-"):
            return  # Claude Code asks for its own model names; serve ours
        raise ApiError(
            404, f"The model '{requested}' does not exist; this server serves "
            f"'{self.settings.served_model_id}'.", "invalid_request_error",
            code="model_not_found", param="model",
        )

    def start(self, request: ChatRequest, flavor: str, progress=None, waiting=None) -> Generation:
        """Queue a generation; engine problems become the right ApiError.
        `waiting` is called while the request queues (see Engine.generate)."""
        if self.draining:
            raise ApiError(503, "The server is shutting down.", "service_unavailable")
        if not self.engine.loaded:
            raise ApiError(503, "The model is still loading; try again shortly.", "service_unavailable")
        if len(self.active) >= self.settings.max_pending:
            if flavor == "anthropic":
                raise ApiError(529, "The server is overloaded; try again shortly.", "overloaded_error")
            raise ApiError(429, "Too many requests are waiting; try again shortly.",
                           "rate_limit_error", code="server_busy")
        try:
            gen = Generation(self.engine, request, progress=progress, waiting=waiting)
        except ContextOverflow as e:
            raise context_overflow(e.limit, e.prompt_tokens, flavor) from None
        except EngineUnavailable as e:
            raise ApiError(503, f"The generation engine is unavailable: {e}.", "service_unavailable") from None
        except (ApiError, ClientGone):
            raise
        except Exception as e:
            log.exception("generation failed to start")
            raise ApiError(500, f"Generation failed: {type(e).__name__}: {e}", "server_error") from None
        with self._lock:
            self.active.add(gen)
            self.requests_served += 1
        return gen

    def finish(self, gen: Generation) -> None:
        with self._lock:
            self.active.discard(gen)
        t, u = gen.timing, gen.usage
        rate = u.completion_tokens / t.decode_seconds if t.decode_seconds > 0 else 0.0
        lookup = getattr(gen, "cache_lookup", None)
        log.info(
            "done: prompt=%d cached=%d cache=%s completion=%d (reasoning %d) ttft=%.2fs "
            "decode=%.1f tok/s finish=%s", u.prompt_tokens, u.cached_tokens,
            lookup.describe() if lookup else "none", u.completion_tokens,
            u.reasoning_tokens, t.ttft, rate, gen.finish_reason,
        )

    def cancel_all(self) -> None:
        with self._lock:
            active = list(self.active)
        for gen in active:
            gen.cancel()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mlx-native-server"
    app: App  # set by make_server
    timeout: float  # socket timeout: a body that never arrives is dropped

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_OPTIONS(self):
        self.send_response(204)
        self.send_cors_headers()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_error(self, code, message=None, explain=None):
        """Errors raised by http.server itself (bad request line, …) as JSON."""
        self.close_connection = True
        self.send_json(code, error_body(ApiError(code, message or self.responses.get(code, ("error",))[0]), "openai"))

    def send_cors_headers(self):
        allowed = [o.strip() for o in self.app.settings.allowed_origins.split(",") if o.strip()]
        headers = getattr(self, "headers", None)
        origin = headers.get("Origin") if headers else None
        if origin and (origin in allowed or "*" in allowed):
            self.send_header("Access-Control-Allow-Origin", "*" if "*" in allowed else origin)
            self.send_header("Vary", "Origin")
            self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "*")

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_cors_headers()
        self.end_headers()
        self.headers_sent = True
        self.wfile.write(data)
        self.wfile.flush()

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        flavor = flavor_of(path)
        self.headers_sent = False
        self.stream = None
        try:
            found = ROUTES.get((method, path)) or ROUTES.get((method, path.rsplit("/", 1)[0] + "/*"))
            if found is None:
                if any(p == path for _, p in ROUTES):
                    raise ApiError(405, f"{method} is not allowed on {path}.")
                raise ApiError(404, f"Unknown path {path}.", "not_found_error")
            flavor = found.flavor
            if path != "/health":
                self._check_auth()
            body = self._read_json() if found.needs_body else None
            found.handler(self, body)
        except ApiError as e:
            self._reply_error(e, flavor)
        except ClientGone:
            log.info("client disconnected; cancelling its generation")
            self.close_connection = True
        except PrefillCancelled:
            self.close_connection = True  # its client is gone; nothing to answer
        except Exception as e:
            log.exception("unexpected error on %s %s", method, path)
            self._reply_error(ApiError(500, f"Internal error: {type(e).__name__}: {e}", "server_error"), flavor)

    def _reply_error(self, e: ApiError, flavor: str) -> None:
        if self.headers_sent:
            # Mid-stream: tell the client in the stream, then end it.
            self.close_connection = True
            stream = getattr(self, "stream", None)
            if stream is not None and not stream.closed:
                try:
                    stream.send(error_body(e, flavor), event="error" if flavor == "anthropic" else None)
                except Exception:
                    pass
                stream.close()
            return
        level = logging.ERROR if e.status == 500 else logging.INFO
        log.log(level, "%s %s -> %d %s", self.command, self.path, e.status, e.message)
        try:
            self.send_json(e.status, error_body(e, flavor))
        except OSError:
            self.close_connection = True

    def _check_auth(self) -> None:
        key = self.app.settings.api_key
        if not key:
            return
        given = self.headers.get("x-api-key") or ""
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(401, "Invalid or missing API key (send 'Authorization: Bearer KEY' or 'x-api-key: KEY').",
                           "authentication_error", code="invalid_api_key")

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise ApiError(411, "A Content-Length header is required.")
        try:
            length = int(length)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "Invalid Content-Length header.") from None
        if length > self.app.settings.max_body_bytes:
            self.close_connection = True
            raise ApiError(413, f"Request body of {length} bytes is larger than the "
                           f"{self.app.settings.max_body_bytes}-byte limit.", "request_too_large")
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise ApiError(408, "The request body did not arrive in time.", "timeout_error") from None
        if len(raw) < length:
            self.close_connection = True
            raise ApiError(400, "The request body ended early.")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"Invalid JSON in request body: {e}.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        """A client that resets an idle keep-alive connection is routine; log
        anything else with its traceback (to the log, not bare stderr)."""
        import sys
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended: %s", client_address[0], exc)
        else:
            log.exception("error on a connection from %s", client_address[0])


class Server6(Server):
    address_family = socket.AF_INET6


def make_server(app: App) -> Server:
    """An HTTP server on the configured host and port, not yet serving."""
    from . import api_routes  # noqa: F401  (registers every front end)

    handler = type("BoundHandler", (Handler,), {"app": app, "timeout": app.settings.request_timeout})
    host = app.settings.host
    server_class = Server6 if ":" in host else Server
    return server_class((host, app.settings.port), handler)
