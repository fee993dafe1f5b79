"""OpenAI Responses requests -> the engine's ChatRequest. Pure, no I/O.

The server keeps no responses, so requests are stateless: the client sends
the whole conversation as `input` items (as Codex CLI does with
`store: false`), and `previous_response_id` answers a 400.

Mapping (see reasoning.py for the template form):
- `instructions` -> the first system message; `developer`/`system`
  messages -> system turns (hoisted by reasoning.to_template);
- `message` items -> turns (text parts joined with no separator, as the
  chat front end does); `input_image`/`input_file` -> a 400 (text model);
- `reasoning` items -> `reasoning_content` of the next assistant turn
  (from `content` reasoning_text, else `summary`);
- `function_call` items -> `tool_calls` of the assistant turn they follow
  (arguments as a mapping); `function_call_output` -> `role: "tool"`;
- function tools -> chat tools; other tool types (web_search, custom,
  local_shell, …) are left out: this server runs no hosted tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ...engine.types import ChatRequest
from ..errors import bad_request, expect, expect_number, optional_array
from ..reasoning import join_content, to_template

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text", "text", "refusal", "summary_text", "reasoning_text")


@dataclass(frozen=True)
class ResponsesOptions:
    stream: bool
    model: str
    echo: dict  # request fields the response object repeats


def parts_text(content: Any, where: str) -> str:
    """A string, or text parts joined as they are."""
    return join_content(content, where, _part_text, noun="content parts")


def _part_text(part: Any, where: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_image", "input_file", "input_audio"):
        raise bad_request(f"'{where}' is {kind}, but this model reads text only.")
    if kind not in TEXT_PARTS:
        raise bad_request(f"'{where}' must be a text part, got {kind!r}.")
    text = part.get("refusal") if kind == "refusal" else part.get("text")
    if not isinstance(text, str):
        raise bad_request(f"'{where}.text' must be a string.")
    return text


def _arguments(raw: Any, where: str) -> dict:
    if isinstance(raw, dict):
        return raw
    if raw in (None, ""):
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError):  # bad JSON, a 5,000-digit integer, deep nesting
        value = None
    if not isinstance(value, dict):
        raise bad_request(f"'{where}' must be a JSON object.")
    return value


def _reasoning_text(item: dict, where: str) -> str:
    text = parts_text(item.get("content"), where + ".content")
    return text or "\n".join(
        s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict)
    )


class _Conversation:
    """Accumulates template-form messages from input items."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.reasoning = ""  # from a reasoning item, for the next assistant turn

    def assistant(self, content: str = "") -> dict:
        turn: dict[str, Any] = {"role": "assistant", "content": content}
        if self.reasoning:
            turn["reasoning_content"] = self.reasoning
            self.reasoning = ""
        self.messages.append(turn)
        return turn

    def add(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise bad_request(f"'{where}' must be an object.")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            self._message(item, where)
        elif kind == "reasoning":
            self.reasoning = _reasoning_text(item, where)
        elif kind == "function_call":
            self._function_call(item, where)
        elif kind == "function_call_output":
            output = item.get("output")
            self.messages.append(
                {
                    "role": "tool",
                    "content": parts_text(output, where + ".output"),
                    "tool_call_id": str(item.get("call_id") or ""),
                }
            )
        elif kind == "item_reference":
            raise bad_request(
                f"'{where}' refers to a stored item, but this server stores "
                "nothing; send the item itself."
            )
        else:
            raise bad_request(
                f"'{where}.type' {kind!r} is not supported; send message, "
                "reasoning, function_call or function_call_output items."
            )

    def _message(self, item: dict, where: str) -> None:
        raw_role = item.get("role")
        role = ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise bad_request(f"'{where}.role' must be user, assistant, system or developer.")
        text = parts_text(item.get("content"), where + ".content")
        if role == "assistant":
            self.assistant(text)
        else:
            self.messages.append({"role": role, "content": text})

    def _function_call(self, item: dict, where: str) -> None:
        name = expect(item, "name", str, required=True, where=where + ".")
        call = {
            "id": str(item.get("call_id") or item.get("id") or ""),
            "type": "function",
            "function": {
                "name": name,
                "arguments": _arguments(item.get("arguments"), where + ".arguments"),
            },
        }
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant" or self.reasoning:
            last = self.assistant()
        last.setdefault("tool_calls", []).append(call)


def translate_input(input_: Any, instructions: str | None = None) -> list[dict]:
    """Responses `instructions` + `input` -> template-form chat messages."""
    conv = _Conversation()
    if instructions:
        conv.messages.append({"role": "system", "content": instructions})
    if isinstance(input_, str):
        conv.messages.append({"role": "user", "content": input_})
    elif isinstance(input_, list) and input_:
        for i, item in enumerate(input_):
            conv.add(item, f"input[{i}]")
    else:
        raise bad_request("'input' must be a string or a non-empty array of items.", param="input")
    return to_template(conv.messages)


def translate_tools(tools: Any) -> list[dict] | None:
    """Responses function tools -> chat tools; other kinds are left out."""
    if optional_array(tools, "tools") is None:
        return None
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        fn = {
            "name": expect(tool, "name", str, required=True, where=f"tools[{i}]."),
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out or None


def _max_output_tokens(body: dict) -> int | None:
    value = expect(body, "max_output_tokens", int)
    if value is not None and value < 1:
        raise bad_request("'max_output_tokens' must be at least 1.", param="max_output_tokens")
    return value


def parse_responses(body: dict, served_model: str) -> tuple[ChatRequest, ResponsesOptions]:
    """A Responses body -> ChatRequest and options (unknown fields ignored)."""
    if body.get("previous_response_id"):
        raise bad_request(
            "'previous_response_id' is not supported: this server stores no "
            "responses. Send the whole conversation in 'input' (store: false).",
            param="previous_response_id",
        )
    instructions = expect(body, "instructions", str)
    tools = translate_tools(body.get("tools"))
    if body.get("tool_choice") == "none":
        tools = None
    request = ChatRequest(
        messages=translate_input(body.get("input"), instructions),
        tools=tools,
        max_tokens=_max_output_tokens(body),
        temperature=expect_number(body, "temperature", low=0, high=2),
        top_p=expect_number(body, "top_p", low=0, high=1),
        session_id=expect(body, "prompt_cache_key", str),
    )
    model = expect(body, "model", str, default=served_model) or served_model
    echo = {
        "instructions": instructions,
        "max_output_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "metadata": body.get("metadata") or {},
    }
    return request, ResponsesOptions(bool(expect(body, "stream", bool, default=False)), model, echo)
