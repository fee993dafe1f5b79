"""OpenAI chat completions (`/v1/chat/completions`) and `/v1/models`.

Shaped as OpenCode's provider (`@ai-sdk/openai-compatible`) reads it:
reasoning streamed as `reasoning_content`, each tool call's first delta with
`id` and `function.name`, `finish_reason: "tool_calls"`, and with
`stream_options.include_usage` a last chunk with `"choices": []` and usage.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from .api_errors import bad_request, expect, expect_number
from .engine import ChatRequest
from .generation import Generation
from .http_server import App, Handler, route
from .reasoning import normalize_messages
from .sse import ConnectionGuard, open_stream, while_queued

SESSION_HEADERS = ("x-session-affinity", "x-session-id", "x-claude-code-session-id")


@dataclass(frozen=True)
class ChatOptions:
    stream: bool
    include_usage: bool
    model: str


def _max_tokens(body: dict) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = expect(body, name, (int, float))
        if value is None:
            continue
        if value != int(value) or value < 1:
            raise bad_request(f"'{name}' must be a whole number of at least 1.", param=name)
        return int(min(value, 1 << 62))
    return None


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise bad_request("'stop' must be a string or an array of strings.", param="stop")


def _tools(body: dict) -> list[dict] | None:
    tools = expect(body, "tools", list)
    if not tools or body.get("tool_choice") == "none":
        return None
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad_request(f"'tools[{i}].function.name' is required.", param="tools")
    return tools


def session_id(headers) -> str | None:
    for name in SESSION_HEADERS:
        if headers.get(name):
            return headers.get(name)
    return None


def parse_chat(body: dict, app: App, headers) -> tuple[ChatRequest, ChatOptions]:
    """Validate an OpenAI chat body into the engine's request (pure but for app's names)."""
    app.check_model(body.get("model"))
    n = expect(body, "n", int, default=1)
    if n != 1:
        raise bad_request("Only n = 1 is supported.", param="n")
    stream = expect(body, "stream", bool, default=False)
    options = expect(body, "stream_options", dict, default={})
    request = ChatRequest(
        messages=normalize_messages(body.get("messages")),
        tools=_tools(body),
        max_tokens=_max_tokens(body),
        temperature=expect_number(body, "temperature", low=0, high=2),
        top_p=expect_number(body, "top_p", low=0, high=1),
        top_k=expect(body, "top_k", int),
        min_p=expect_number(body, "min_p", low=0, high=1) or 0.0,
        stop=_stop(body),
        seed=expect(body, "seed", int),
        chat_template_kwargs=expect(body, "chat_template_kwargs", dict),
        session_id=session_id(headers),
    )
    if app.test_hooks:
        request.script = expect(body, "x_mns_script", str)
    model = body.get("model") or app.settings.served_model_id
    return request, ChatOptions(stream, bool(options.get("include_usage")), model)


def usage_dict(gen: Generation) -> dict[str, Any]:
    u = gen.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def _tool_call_dict(call, index: int | None = None) -> dict:
    out = {"id": call.id, "type": "function",
           "function": {"name": call.name, "arguments": call.arguments}}
    if index is not None:
        out["index"] = index
    return out


class _Chunks:
    """Builds the chunk objects of one streamed completion."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def chunk(self, delta: dict | None, finish: str | None = None, usage=None) -> dict:
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model, "system_fingerprint": "mlx-native-server",
               "choices": [] if delta is None else
               [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if usage is not None:
            out["usage"] = usage
        return out


def _stream(h: Handler, gen: Generation, opts: ChatOptions) -> None:
    chunks = _Chunks(opts.model)
    stream = open_stream(h)
    with ConnectionGuard(h.connection, gen.cancel, stream, h.app.settings.keepalive_interval):
        stream.send(chunks.chunk({"role": "assistant", "content": ""}))
        n_calls = 0
        for d in gen:
            if d.kind == "reasoning":
                delta = {"reasoning_content": d.text}
            elif d.kind == "text":
                delta = {"content": d.text}
            else:
                delta = {"tool_calls": [_tool_call_dict(d.call, n_calls)]}
                n_calls += 1
            stream.send(chunks.chunk(delta))
        stream.send(chunks.chunk({}, gen.finish_reason))
        if opts.include_usage:
            stream.send(chunks.chunk(None, usage=usage_dict(gen)))
        stream.send("[DONE]")
    stream.close()


def _complete(h: Handler, gen: Generation, opts: ChatOptions) -> None:
    text, reasoning, calls = [], [], []
    with ConnectionGuard(h.connection, gen.cancel, None, h.app.settings.keepalive_interval) as guard:
        for d in gen:
            if d.kind == "reasoning":
                reasoning.append(d.text)
            elif d.kind == "text":
                text.append(d.text)
            else:
                calls.append(_tool_call_dict(d.call))
    if guard.gone:
        h.close_connection = True
        return
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    chunks = _Chunks(opts.model)
    h.send_json(200, {
        "id": chunks.id, "object": "chat.completion", "created": chunks.created,
        "model": opts.model, "system_fingerprint": "mlx-native-server",
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": gen.finish_reason}],
        "usage": usage_dict(gen),
    })


@route("POST", "/v1/chat/completions", "/chat/completions")
def chat_completions(h: Handler, body: dict) -> None:
    request, opts = parse_chat(body, h.app, h.headers)
    gen = h.app.start(request, "openai", waiting=while_queued(h, opts.stream))
    try:
        (_stream if opts.stream else _complete)(h, gen, opts)
    finally:
        gen.cancel()  # a no-op once finished; stops the engine if we bailed out
        h.app.finish(gen)


@route("GET", "/v1/models", "/models")
def list_models(h: Handler, _body) -> None:
    h.send_json(200, {"object": "list", "data": [_model_card(h.app)]})


def _model_card(app: App) -> dict:
    return {"id": app.settings.served_model_id, "object": "model",
            "created": int(app.started), "owned_by": "mlx-native-server"}


@route("GET", "/v1/models/*")
def get_model(h: Handler, _body) -> None:
    name = h.path.split("?", 1)[0].split("/v1/models/", 1)[1]
    h.app.check_model(name)
    h.send_json(200, _model_card(h.app))


@route("GET", "/health")
def health(h: Handler, _body) -> None:
    app = h.app
    if not app.engine.alive:
        h.send_json(503, {"status": "unavailable", "reason": "the generation engine has stopped"})
    elif not app.engine.loaded:
        h.send_json(503, {"status": "loading", "reason": "the model is still loading"})
    elif app.draining:
        h.send_json(503, {"status": "stopping", "reason": "the server is shutting down"})
    else:
        h.send_json(200, {"status": "ok", "model": app.settings.served_model_id})
