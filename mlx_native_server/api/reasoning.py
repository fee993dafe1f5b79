"""Chat messages as clients send them -> the form MiniMax's template renders.

Pure functions, no I/O. The MiniMax M2 template renders an earlier turn's
reasoning only from a `reasoning_content` string (or an inline
`<think>…</think>`), needs tool-call arguments as a mapping, and expects
string content. Clients vary: OpenCode echoes reasoning back as
`reasoning_content`, others as `reasoning`; content may be "", null, or a
list of text parts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request
from .prompt_normalize import clean_messages

_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
ROLES = ("system", "user", "assistant", "tool", "developer")


def join_content(
    content: Any,
    where: str,
    part_text: Callable[[Any, str], str],
    *,
    sep: str = "",
    noun: str = "text parts",
) -> str:
    """Content that is a string, null or a list of parts, as one string.
    `part_text(part, where)` gives a part's text or raises a 400; every API
    front end shares this, each with its own kinds of part."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"'{where}' must be a string, null or an array of {noun}.")
    texts = (part_text(part, f"{where}[{i}]") for i, part in enumerate(content))
    return sep.join(t for t in texts if t)


def _chat_part_text(part: Any, where: str) -> str:
    if isinstance(part, str):
        return part
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("image_url", "input_image", "image"):
        raise bad_request("This model does not accept images; send text only.")
    if kind not in ("text", "input_text", "output_text"):
        raise bad_request(f"'{where}' must be a text part.")
    return text_field(part, where)


def text_field(part: dict, where: str, key: str = "text") -> str:
    """part[key], which must be a string."""
    text = part.get(key)
    if not isinstance(text, str):
        raise bad_request(f"'{where}.{key}' must be a string.")
    return text


def text_of(content: Any, where: str) -> str:
    """OpenAI chat content as a string: a string, null, or a list of text parts."""
    return join_content(content, where, _chat_part_text)


def split_inline_think(content: str) -> tuple[str | None, str]:
    """'<think>r</think>answer' -> ('r', 'answer'); no think block -> (None, content)."""
    m = _THINK.match(content)
    if not m:
        return None, content
    return m.group(1).strip("\n"), content[m.end() :]


def _arguments(raw: Any, where: str) -> dict:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):  # bad JSON, a 5,000-digit integer, deep nesting
            raise bad_request(f"'{where}' must be a JSON object.") from None
        if isinstance(value, dict):
            return value
    raise bad_request(f"'{where}' must be a JSON object.")


def _tool_calls(calls: Any, where: str) -> list[dict]:
    if not isinstance(calls, list):
        raise bad_request(f"'{where}' must be an array.")
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad_request(f"'{where}[{i}].function.name' is required.")
        out.append(
            {
                "id": call.get("id") or f"call_{i}",
                "type": "function",
                "function": {
                    "name": fn["name"],
                    "arguments": _arguments(
                        fn.get("arguments"), f"{where}[{i}].function.arguments"
                    ),
                },
            }
        )
    return out


def normalize_message(message: Any, index: int) -> dict:
    """One OpenAI chat message -> the template's form (see module doc)."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad_request(f"'{where}' must be an object.")
    role = message.get("role")
    if role not in ROLES:
        raise bad_request(f"'{where}.role' must be one of {', '.join(ROLES)}.")
    role = "system" if role == "developer" else role
    content = text_of(message.get("content"), f"{where}.content")
    out: dict[str, Any] = {"role": role, "content": content}
    if role == "assistant":
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning is not None and not isinstance(reasoning, str):
            reasoning = text_of(reasoning, f"{where}.reasoning_content")
        inline, content = split_inline_think(content)
        out["content"] = content
        reasoning = reasoning or inline
        if reasoning:
            out["reasoning_content"] = reasoning
        if message.get("tool_calls"):
            out["tool_calls"] = _tool_calls(message["tool_calls"], f"{where}.tool_calls")
    elif role == "tool":
        if message.get("tool_call_id") is not None:
            out["tool_call_id"] = str(message["tool_call_id"])
        if message.get("name"):
            out["name"] = str(message["name"])
    return out


def normalize_messages(messages: Any) -> list[dict]:
    """All messages in the template's form (see hoist_system for system turns)."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array.", param="messages")
    return to_template([normalize_message(m, i) for i, m in enumerate(messages)])


def to_template(messages: list[dict]) -> list[dict]:
    """The last step of every front end: drop volatile lines (prompt_normalize),
    then hoist later system turns (hoist_system)."""
    return hoist_system(clean_messages(messages))


def hoist_system(messages: list[dict]) -> list[dict]:
    """The MiniMax template silently drops a system message anywhere but
    first, so a later one becomes a user turn marked '[system]': its text
    reaches the model in place, and the prefix before it (and its cache)
    stays as it was."""
    out = []
    for i, m in enumerate(messages):
        if m["role"] == "system" and i > 0:
            out.append({"role": "user", "content": f"[system]\n{m['content']}"})
        else:
            out.append(m)
    return out
