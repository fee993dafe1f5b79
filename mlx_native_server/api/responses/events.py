"""Generation Deltas -> Responses API output items and stream events. Pure.

`Output.feed(delta)` returns the events one delta causes (without
`sequence_number`, which the sender adds); `Output.finish(...)` closes the
open item and returns the last event, `response.completed` (or
`response.incomplete` when max_output_tokens cut the reply). Reasoning is
a `reasoning` item whose `content` holds `reasoning_text` parts (streamed
as `response.reasoning_text.delta`); clients echo it back as input.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ...engine.types import Delta, ToolCall, Usage

Event = dict[str, Any]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def usage_dict(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


class Output:
    """The output items of one response, built delta by delta."""

    def __init__(self, model: str, echo: dict[str, Any]):
        self.id = _id("resp")
        self.created_at = int(time.time())
        self.model = model
        self.echo = echo
        self.items: list[dict] = []
        self._open: str | None = None  # "reasoning" or "text": the item being streamed

    def response(self, status: str, usage: Usage | None = None) -> dict[str, Any]:
        """The response object as it stands ('in_progress', 'completed', 'incomplete')."""
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "model": self.model,
            "output": [_copy(i) for i in self.items] if status != "in_progress" else [],
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": False,
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "usage": usage_dict(usage) if usage else None,
            **self.echo,
        }

    def start(self) -> list[Event]:
        snapshot = self.response("in_progress")
        return [
            {"type": "response.created", "response": snapshot},
            {"type": "response.in_progress", "response": snapshot},
        ]

    @property
    def _index(self) -> int:
        return len(self.items) - 1

    def feed(self, d: Delta) -> list[Event]:
        events = []
        if d.kind == "tool_call" or self._open != d.kind:
            events += self.close_item()
        if d.kind == "tool_call":
            assert d.call is not None, "a tool_call Delta always carries its call"
            return events + self._function_call(d.call)
        if self._open is None:
            events += self._open_item(d.kind)
        item = self.items[-1]
        part = item["content"][0]
        part["text"] += d.text
        kind = "reasoning_text" if d.kind == "reasoning" else "output_text"
        event = {
            "type": f"response.{kind}.delta",
            "item_id": item["id"],
            "output_index": self._index,
            "content_index": 0,
            "delta": d.text,
        }
        if kind == "output_text":
            event["logprobs"] = []
        return events + [event]

    def _open_item(self, kind: str) -> list[Event]:
        item: dict[str, Any]
        part: dict[str, Any]
        if kind == "reasoning":
            item = {"id": _id("rs"), "type": "reasoning", "summary": [], "content": []}
            part = {"type": "reasoning_text", "text": ""}
        else:
            item = {
                "id": _id("msg"),
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self.items.append(item)
        self._open = kind
        events = [
            {"type": "response.output_item.added", "output_index": self._index, "item": _copy(item)}
        ]
        item["content"].append(part)
        events.append(
            {
                "type": "response.content_part.added",
                "item_id": item["id"],
                "output_index": self._index,
                "content_index": 0,
                "part": dict(part),
            }
        )
        return events

    def _function_call(self, call: ToolCall) -> list[Event]:
        item = {
            "id": _id("fc"),
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": "",
            "status": "in_progress",
        }
        self.items.append(item)
        i = self._index
        added = {"type": "response.output_item.added", "output_index": i, "item": dict(item)}
        item.update(arguments=call.arguments, status="completed")
        return [
            added,
            {
                "type": "response.function_call_arguments.delta",
                "item_id": item["id"],
                "output_index": i,
                "delta": call.arguments,
            },
            {
                "type": "response.function_call_arguments.done",
                "item_id": item["id"],
                "output_index": i,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "response.output_item.done", "output_index": i, "item": dict(item)},
        ]

    def close_item(self) -> list[Event]:
        """End the open reasoning or message item."""
        if self._open is None:
            return []
        item, i = self.items[-1], self._index
        part = item["content"][0]
        kind = "reasoning_text" if self._open == "reasoning" else "output_text"
        done = {
            "type": f"response.{kind}.done",
            "item_id": item["id"],
            "output_index": i,
            "content_index": 0,
            "text": part["text"],
        }
        if kind == "output_text":
            done["logprobs"] = []
            item["status"] = "completed"
        self._open = None
        return [
            done,
            {
                "type": "response.content_part.done",
                "item_id": item["id"],
                "output_index": i,
                "content_index": 0,
                "part": dict(part),
            },
            {"type": "response.output_item.done", "output_index": i, "item": _copy(item)},
        ]

    def finish(self, finish_reason: str | None, usage: Usage) -> list[Event]:
        """Close the open item; the final event carries the whole response."""
        status = "incomplete" if finish_reason == "length" else "completed"
        return self.close_item() + [
            {"type": f"response.{status}", "response": self.response(status, usage)}
        ]


def _copy(item: dict) -> dict:
    if "content" not in item:
        return dict(item)
    return {**item, "content": [dict(p) for p in item["content"]]}
