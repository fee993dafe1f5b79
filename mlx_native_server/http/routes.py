"""The routes: each validates its body against its schema (`schemas`),
translates it and hands it to a `streaming.Exchange`, or answers itself."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..api.anthropic.frontend import MessagesFrontEnd
from ..api.anthropic.translate import parse_messages
from ..api.errors import ApiError, expect
from ..api.openai.chat import ChatFrontEnd, parse_chat
from ..api.responses.frontend import ResponsesFrontEnd
from ..api.responses.translate import parse_responses
from ..api.schemas import models as schemas
from ..api.streaming import TEST_SCRIPT_FIELD, Exchange, session_id
from ..core import blas
from ..engine.types import ConversationRefused, EngineUnavailable
from .app import App, engine_unavailable


def _app(request: Request) -> App:
    return request.app.state.mns


def _body(request: Request) -> dict:
    return request.scope["mns.body"]


class _ExchangeResponse(Response):
    """Streams (or answers) one Exchange; see streaming.py."""

    def __init__(self, ex: Exchange):
        self.ex = ex
        self.background = None

    async def __call__(self, scope, receive, send) -> None:
        # Every token passes here: straight to the boundary's send, past
        # Starlette's per-message wrappers (they only track the start).
        await self.ex.respond(receive, scope.get("mns.send", send))


def _generate(request: Request, chat, fe) -> Response:
    """The shared tail of every generation route: hint, hook, admit, start."""
    app = _app(request)
    chat.session_id = chat.session_id or session_id(request.headers)
    if app.test_hooks:
        chat.script = expect(_body(request), TEST_SCRIPT_FIELD, str)
    app.admit(fe.flavor)
    ex = Exchange(app, chat, fe, asyncio.get_running_loop())
    threading.Thread(target=ex.work, name="request", daemon=True).start()
    return _ExchangeResponse(ex)


async def chat_completions(request: Request) -> Response:
    body = _body(request)
    schemas.validate_openai_chat(body)
    app = _app(request)
    app.check_model(body.get("model"))
    chat, stream, include_usage = parse_chat(body)
    model = body.get("model") or app.settings.served_model_id
    return _generate(request, chat, ChatFrontEnd(model, stream, include_usage))


async def messages(request: Request) -> Response:
    body = _body(request)
    schemas.validate_anthropic_messages(body)
    app = _app(request)
    app.check_model(body.get("model"), "anthropic")
    chat, opts = parse_messages(body, app.settings.served_model_id)
    return _generate(request, chat, MessagesFrontEnd(opts))


async def count_tokens(request: Request) -> Response:
    body = _body(request)
    schemas.validate_anthropic_messages(body, count_only=True)
    app = _app(request)
    app.check_model(body.get("model"), "anthropic")
    chat, _ = parse_messages(body, app.settings.served_model_id, count_only=True)
    try:
        n = await asyncio.to_thread(app.engine.count_tokens, chat)
    except EngineUnavailable as e:
        raise engine_unavailable(e) from None
    except ConversationRefused as e:
        raise ApiError(400, f"Could not render the conversation: {e}") from None
    return JSONResponse({"input_tokens": n})


async def responses(request: Request) -> Response:
    body = _body(request)
    schemas.validate_responses(body)
    app = _app(request)
    app.check_model(body.get("model"))
    chat, opts = parse_responses(body, app.settings.served_model_id)
    return _generate(request, chat, ResponsesFrontEnd(opts))


def _model_card(app: App) -> dict:
    return {
        "id": app.settings.served_model_id,
        "object": "model",
        "created": int(app.started),
        "owned_by": "mlx-native-server",
    }


async def list_models(request: Request) -> Response:
    app = _app(request)
    app.require_loaded()
    return JSONResponse({"object": "list", "data": [_model_card(app)]})


async def get_model(request: Request) -> Response:
    app = _app(request)
    app.check_model(request.path_params["model"])
    app.require_loaded()
    return JSONResponse(_model_card(app))


_HEALTH = {
    "ok": (200, None),
    "loading": (503, "the model is still loading"),
    "draining": (503, "the server is shutting down"),
    "failed": (
        503,
        "the generation engine has failed; the server exits so its service manager restarts it",
    ),
}


async def health(request: Request) -> Response:
    app = _app(request)
    state = app.engine_state()
    status, reason = _HEALTH[state]
    if status == 200:
        return JSONResponse({"status": "ok", "model": app.settings.served_model_id})
    return JSONResponse(
        {
            "status": "unavailable"
            if state == "failed"
            else ("stopping" if state == "draining" else state),
            "reason": reason,
        },
        status,
    )


async def server_status(request: Request) -> Response:
    app = _app(request)
    engine, s = app.engine, app.settings
    state = app.engine_state()
    return JSONResponse(
        {
            "status": {"draining": "unavailable", "failed": "unavailable"}.get(state, state),
            "version": __version__,
            "mlx_lm_version": engine.mlx_lm_version,
            "model": {"id": s.served_model_id, "path": str(s.model_path)},
            "context_tokens": s.max_tokens,
            "kv_bits": engine.kv_bits or 0,
            "cpu_blas": blas.current(),
            "uptime_seconds": round(time.time() - app.started, 1),
            "requests_served": app.requests_served,
            "requests_in_flight": len(app.active),
            "requests_waiting": app.pending,
            "memory": {"active_bytes": engine.active_memory(), "limit_bytes": engine.memory_limit},
            "prompt_cache": engine.cache_stats(),
            "batching": engine.batch_stats(),
        }
    )


async def metrics(request: Request) -> Response:
    app = _app(request)
    if app.metrics is None:
        raise ApiError(404, "Metrics are off.", "not_found_error")
    data, content_type = app.metrics.render()
    return Response(data, media_type=content_type)


@functools.cache
def _openapi_bytes() -> bytes:
    from ..api.schemas.openapi import document  # built from the schemas on first use

    return json.dumps(document()).encode()  # ~50 ms to build: once


async def openapi(request: Request) -> Response:
    return Response(_openapi_bytes(), media_type="application/json")


async def break_engine(request: Request) -> Response:
    """Test hook: make the generation thread hang, then die (watchdog tests)."""
    hang = _body(request).get("hang_seconds", 0)
    if isinstance(hang, bool) or not isinstance(hang, (int, float)) or not 0 <= hang < 3600:
        raise ApiError(
            400, "'hang_seconds' must be a number of seconds, 0 or more.", param="hang_seconds"
        )
    _app(request).engine.break_for_test(float(hang))
    return JSONResponse({"broken": True, "hang_seconds": hang})


ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    Route("/v1/responses", responses, methods=["POST"]),
    Route("/responses", responses, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/status", server_status, methods=["GET"]),
    Route("/v1/status", server_status, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
TEST_ROUTES = [Route("/_test/break-engine", break_engine, methods=["POST"])]
