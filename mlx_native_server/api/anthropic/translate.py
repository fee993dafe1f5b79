"""Anthropic Messages requests -> the engine's ChatRequest. Pure, no I/O.

Mapping (see reasoning.py for the template form):
- `system` (a string or text blocks) -> the first system message; a
  `role: "system"` turn later in `messages` (Claude Code 2.1.x) is hoisted
  to a user turn marked [system] by reasoning.to_template;
- text blocks are joined with a blank line whatever their `cache_control`
  markers, so a string and a single text block give the same prompt;
- assistant `thinking` blocks -> `reasoning_content` (signatures are not
  checked), `redacted_thinking` is dropped, `tool_use` -> `tool_calls`
  with the input as a mapping;
- user `tool_result` blocks -> `role: "tool"` messages (before the turn's
  text, as the template wants), or a user turn when no tool call precedes
  them (after compaction), where the template would refuse a tool turn;
- `image` and `document` blocks -> a 400: MiniMax M2.x reads text only;
- `tools` -> function tools (`input_schema` as `parameters`); tools with a
  server-side `type` (web_search_…, bash_…) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...engine.types import ChatRequest
from ..errors import bad_request, expect, expect_number, optional_array
from ..reasoning import join_content, text_field, to_template

ROLES = ("user", "assistant", "system")
NON_TEXT = ("image", "document", "search_result", "container_upload")
BLOCK_JOIN = "\n\n"


@dataclass(frozen=True)
class MessagesOptions:
    stream: bool
    model: str
    show_thinking: bool  # False only for `thinking: {"type": "disabled"}`


def blocks_text(content: Any, where: str) -> str:
    """A string, or text blocks joined with a blank line (markers ignored)."""
    return join_content(content, where, block_text, sep=BLOCK_JOIN, noun="content blocks")


def block_text(block: Any, where: str) -> str:
    """The text of one text block; a clear 400 for anything else."""
    kind = block.get("type") if isinstance(block, dict) else None
    if kind in NON_TEXT:
        raise bad_request(
            f"'{where}' is a {kind} block, but this model reads text only; "
            "send its content as text."
        )
    if kind != "text":
        raise bad_request(f"'{where}' must be a text block, got {kind!r}.")
    return text_field(block, where)


def _assistant(content: Any, where: str) -> dict:
    if isinstance(content, str) or content is None:
        return {"role": "assistant", "content": content or ""}
    if not isinstance(content, list):
        raise bad_request(f"'{where}' must be a string or an array of content blocks.")
    text, thinking, calls = [], [], []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        at = f"{where}[{i}]"
        if kind == "text":
            text.append(block_text(block, at))
        elif kind == "thinking":
            thinking.append(expect(block, "thinking", str, default="", where=at + "."))
        elif kind == "redacted_thinking":
            continue
        elif kind == "tool_use":
            calls.append(_tool_call(block, at))
        else:
            raise bad_request(f"'{at}' must be a text, thinking or tool_use block, got {kind!r}.")
    out: dict[str, Any] = {"role": "assistant", "content": BLOCK_JOIN.join(t for t in text if t)}
    reasoning = "\n".join(t for t in thinking if t)
    if reasoning:
        out["reasoning_content"] = reasoning
    if calls:
        out["tool_calls"] = calls
    return out


def _tool_call(block: dict, where: str) -> dict:
    name = expect(block, "name", str, required=True, where=where + ".")
    args = expect(block, "input", dict, default={}, where=where + ".")
    call_id = expect(block, "id", str, default="", where=where + ".")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _user(content: Any, where: str, names: dict[str, str], tools_open: bool) -> list[dict]:
    """One user turn -> its tool messages, then its text (if any)."""
    if not isinstance(content, list):
        return [{"role": "user", "content": blocks_text(content, where)}]
    results, texts = [], []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            results.append(_tool_result(block, f"{where}[{i}]", names))
        else:
            texts.append(block_text(block, f"{where}[{i}]"))
    out: list[dict] = []
    if results and tools_open:
        out.extend(results)
    elif results:  # no tool call to answer: keep the text where the model can see it
        texts = [
            f"[tool result {r.get('tool_call_id', '')}]\n{r['content']}" for r in results
        ] + texts
    text = BLOCK_JOIN.join(t for t in texts if t)
    if text or not out:
        out.append({"role": "user", "content": text})
    return out


def _tool_result(block: dict, where: str, names: dict[str, str]) -> dict:
    call_id = expect(block, "tool_use_id", str, required=True, where=where + ".")
    content = block.get("content")
    out = {
        "role": "tool",
        "tool_call_id": call_id,
        "content": blocks_text(content, where + ".content"),
    }
    if call_id in names:
        out["name"] = names[call_id]
    return out


def translate_messages(messages: Any, system: Any = None) -> list[dict]:
    """Anthropic `system` + `messages` -> template-form chat messages."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array.", param="messages")
    out: list[dict] = []
    if system is not None:
        out.append({"role": "system", "content": blocks_text(system, "system")})
    names: dict[str, str] = {}
    tools_open = False  # the last assistant turn made tool calls
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad_request(f"'{where}.role' must be one of {', '.join(ROLES)}.")
        content = m.get("content")
        if m["role"] == "assistant":
            turn = _assistant(content, where + ".content")
            for call in turn.get("tool_calls", []):
                names[call["id"]] = call["function"]["name"]
            tools_open = bool(turn.get("tool_calls"))
            out.append(turn)
        elif m["role"] == "system":
            out.append({"role": "system", "content": blocks_text(content, where + ".content")})
        else:
            out.extend(_user(content, where + ".content", names, tools_open))
    return to_template(out)


def translate_tools(tools: Any) -> list[dict] | None:
    """Anthropic tool definitions -> chat function tools (None if none)."""
    if optional_array(tools, "tools") is None:
        return None
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise bad_request(f"'tools[{i}]' must be an object.", param="tools")
        if tool.get("type") not in (None, "custom"):
            continue  # a server tool (web_search_…, bash_…): the model cannot see its schema
        name = expect(tool, "name", str, required=True, where=f"tools[{i}].")
        schema = expect(
            tool,
            "input_schema",
            dict,
            default={"type": "object", "properties": {}},
            where=f"tools[{i}].",
        )
        fn = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out or None


def _tool_choice(body: dict) -> str:
    choice = expect(body, "tool_choice", dict, default={"type": "auto"})
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        raise bad_request(
            "'tool_choice.type' must be auto, any, tool or none.", param="tool_choice"
        )
    return kind


def _show_thinking(body: dict) -> bool:
    thinking = expect(body, "thinking", dict)
    if thinking is None:
        return True  # MiniMax always reasons; clients that did not ask still parse thinking blocks
    kind = thinking.get("type")
    if kind not in ("enabled", "adaptive", "disabled"):
        raise bad_request(
            "'thinking.type' must be enabled, adaptive or disabled.", param="thinking"
        )
    return kind != "disabled"


def _stop_sequences(body: dict) -> list[str]:
    stops = expect(body, "stop_sequences", list, default=[])
    if not all(isinstance(s, str) for s in stops):
        raise bad_request("'stop_sequences' must be an array of strings.", param="stop_sequences")
    return [s for s in stops if s]


def _max_tokens(body: dict, required: bool) -> int | None:
    value = expect(body, "max_tokens", int, required=required)
    if value is not None and value < 1:
        raise bad_request("'max_tokens' must be at least 1.", param="max_tokens")
    return value


def parse_messages(
    body: dict, served_model: str, *, count_only: bool = False
) -> tuple[ChatRequest, MessagesOptions]:
    """A Messages (or count_tokens) body -> ChatRequest and options.

    Unknown fields (metadata, output_config, context_management, …) are
    accepted and ignored; `tool_choice` any/tool cannot be enforced by the
    engine and is treated as auto, `none` leaves the tools out.
    """
    tools = translate_tools(body.get("tools"))
    if _tool_choice(body) == "none":
        tools = None
    request = ChatRequest(
        messages=translate_messages(body.get("messages"), body.get("system")),
        tools=tools,
        max_tokens=_max_tokens(body, required=not count_only),
        temperature=expect_number(body, "temperature", low=0, high=1),
        top_p=expect_number(body, "top_p", low=0, high=1),
        top_k=expect(body, "top_k", int),
        stop=_stop_sequences(body),
    )
    options = MessagesOptions(
        stream=bool(expect(body, "stream", bool, default=False)),
        model=expect(body, "model", str, default=served_model) or served_model,
        show_thinking=_show_thinking(body),
    )
    return request, options
