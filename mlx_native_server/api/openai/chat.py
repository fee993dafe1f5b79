"""OpenAI chat completions (`/v1/chat/completions`): parser and encoder.

Shaped as OpenCode's provider (`@ai-sdk/openai-compatible`) reads it:
reasoning streamed as `reasoning_content`, each tool call's first delta with
`id` and `function.name`, `finish_reason: "tool_calls"`, and with
`stream_options.include_usage` a last chunk with `"choices": []` and usage.
A stream that fails ends with `data: {"error": …}` then `data: [DONE]`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ...engine.generation import Generation
from ...engine.types import ChatRequest, Delta, ToolCall
from ..errors import ApiError, bad_request, error_body, expect, expect_number
from ..reasoning import normalize_messages
from ..streaming import Event, sse


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


def parse_chat(body: dict) -> tuple[ChatRequest, bool, bool]:
    """An OpenAI chat body -> (request, stream, include_usage). Pure."""
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
    )
    return request, stream, bool(options.get("include_usage"))


def usage_dict(gen: Generation) -> dict[str, Any]:
    u = gen.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def _tool_call_dict(call: ToolCall, index: int | None = None) -> dict:
    out: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    if index is not None:
        out["index"] = index
    return out


class ChatFrontEnd:
    """One chat completion: stream chunks, or the whole completion at the end."""

    flavor = "openai"
    messages_param = "messages"

    def __init__(self, model: str, stream: bool, include_usage: bool):
        self.model, self.stream, self.include_usage = model, stream, include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._calls = 0
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tool_calls: list[dict] = []

    def _chunk(self, delta: dict | None, finish: str | None = None, usage=None) -> Event:
        out = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "mlx-native-server",
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            out["usage"] = usage
        return None, out

    def opening(self, gen: Generation) -> list[Event]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def progress(self, gen: Generation) -> list[Event]:
        return []

    def feed(self, d: Delta) -> list[Event]:
        delta: dict[str, Any]
        if d.kind == "reasoning":
            delta = {"reasoning_content": d.text}
            self._reasoning.append(d.text)
        elif d.kind == "text":
            delta = {"content": d.text}
            self._text.append(d.text)
        else:
            assert d.call is not None, "a tool_call Delta always carries its call"
            delta = {"tool_calls": [_tool_call_dict(d.call, self._calls)]}
            self._tool_calls.append(_tool_call_dict(d.call))
            self._calls += 1
        return [self._chunk(delta)] if self.stream else []

    def closing(self, gen: Generation) -> list[Event]:
        events = [self._chunk({}, gen.finish_reason)]
        if self.include_usage:
            events.append(self._chunk(None, usage=usage_dict(gen)))
        return events + [(None, "[DONE]")]

    def body(self, gen: Generation) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._text) or None}
        if self._reasoning:
            message["reasoning_content"] = "".join(self._reasoning)
        if self._tool_calls:
            message["tool_calls"] = self._tool_calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "mlx-native-server",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": gen.finish_reason,
                }
            ],
            "usage": usage_dict(gen),
        }

    def heartbeat(self) -> bytes:
        return b": keep-alive\n\n"

    def failure(self, error: ApiError) -> bytes:
        return sse([(None, error_body(error, "openai")), (None, "[DONE]")])
