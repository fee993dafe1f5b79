"""Generation Deltas -> Anthropic content blocks and stream events. Pure.

`Blocks.feed(delta)` returns the `(event, data)` pairs Anthropic's stream
sends for it (`content_block_start` / `_delta` / `_stop`); `Blocks.content`
holds the finished blocks for a non-streamed reply. A thinking block ends
with a `signature_delta`: the signature is a hash of the thinking text
(clients echo it back unchanged; this server never checks it).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

from ...engine.types import Delta, ToolCall

Event = tuple[str, dict]

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def tool_use_id(call: ToolCall) -> str:
    """Anthropic-style id for a tool call ('toolu_…')."""
    return "toolu_" + call.id.removeprefix("call_")


def thinking_signature(text: str) -> str:
    """A stable stand-in for Anthropic's signature: base64 of the text's sha256."""
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def stop_reason(finish_reason: str | None, stop_sequence: str | None) -> str:
    if finish_reason == "stop" and stop_sequence:
        return "stop_sequence"
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def usage(prompt_tokens: int, cached_tokens: int, output_tokens: int) -> dict[str, int]:
    """Anthropic usage: `input_tokens` excludes the tokens read from the cache."""
    return {
        "input_tokens": max(prompt_tokens - cached_tokens, 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached_tokens,
        "output_tokens": output_tokens,
    }


def message(
    model: str,
    msg_id: str,
    content: list,
    usage_: dict,
    reason: str | None = None,
    sequence: str | None = None,
) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_,
    }


class Blocks:
    """Turns Deltas into content blocks, one block per run of one kind."""

    def __init__(self, show_thinking: bool = True):
        self.show_thinking = show_thinking
        self.content: list[dict] = []
        self._open: str | None = None  # kind of the block being streamed

    @property
    def _index(self) -> int:
        return len(self.content) - 1

    def feed(self, d: Delta) -> list[Event]:
        if d.kind == "reasoning" and not self.show_thinking:
            return []
        events = []
        if d.kind == "tool_call" or self._open != d.kind:
            events += self.close_block()
        if d.kind == "tool_call":
            assert d.call is not None, "a tool_call Delta always carries its call"
            return events + self._tool_use(d.call)
        if self._open is None:
            events.append(self._start(d.kind))
        block = self.content[-1]
        if d.kind == "reasoning":
            block["thinking"] += d.text
            delta = {"type": "thinking_delta", "thinking": d.text}
        else:
            block["text"] += d.text
            delta = {"type": "text_delta", "text": d.text}
        events.append(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": self._index, "delta": delta},
            )
        )
        return events

    def _start(self, kind: str) -> Event:
        block = (
            {"type": "thinking", "thinking": "", "signature": ""}
            if kind == "reasoning"
            else {"type": "text", "text": ""}
        )
        self.content.append(block)
        self._open = kind
        return (
            "content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": dict(block)},
        )

    def _tool_use(self, call: ToolCall) -> list[Event]:
        block = {"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": {}}
        self.content.append(block)
        i = self._index
        events = [
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": dict(block)},
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "input_json_delta", "partial_json": call.arguments},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": i}),
        ]
        block["input"] = call.arguments_obj
        return events

    def close_block(self) -> list[Event]:
        """End the open text or thinking block (call once more at the end)."""
        if self._open is None:
            return []
        events = []
        block = self.content[-1]
        if block["type"] == "thinking":
            block["signature"] = thinking_signature(block["thinking"])
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._index,
                        "delta": {"type": "signature_delta", "signature": block["signature"]},
                    },
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": self._index}))
        self._open = None
        return events
