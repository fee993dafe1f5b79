"""The engine's request and event types, and its errors: plain data, no mlx.

Every API front end, translator and encoder works with these, so they (and
their tests) import in milliseconds and run without mlx installed.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChatRequest:
    """A chat request in the form the MiniMax template takes (see api/reasoning.py)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float = 0.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    # Test hook (only honoured with MLX_NATIVE_SERVER_TEST_HOOKS=1): the
    # engine is made to spell this text while its real forward pass, caches
    # and parsers run.
    script: str | None = None
    session_id: str | None = None


def new_call_id() -> str:
    """An id shaped like OpenAI's tool-call ids."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text

    @property
    def arguments_obj(self) -> Any:
        return json.loads(self.arguments)


@dataclass
class Delta:
    kind: str  # "reasoning", "text" or "tool_call"
    text: str = ""
    call: ToolCall | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass
class Timing:
    queued: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    done: float | None = None

    @property
    def ttft(self) -> float:
        return (self.first_token or self.done or time.monotonic()) - self.queued

    @property
    def decode_seconds(self) -> float:
        if self.first_token is None or self.done is None:
            return 0.0
        return self.done - self.first_token


class MemoryExhausted(Exception):
    """A request's KV cache and prefill would not fit the memory plan's limit,
    even with the prompt cache spilled to disk."""


class ConversationRefused(Exception):
    """The chat template cannot render the conversation (e.g. a tool result
    with no tool call before it): the client's mistake, not the engine's."""


class ContextOverflow(Exception):
    """The prompt alone does not fit the context cap."""

    def __init__(self, prompt_tokens: int, limit: int):
        super().__init__(f"{prompt_tokens} prompt tokens > {limit} maximum")
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class EngineUnavailable(Exception):
    """The generation thread is dead or the model is not loaded yet."""


class PrefillCancelled(Exception):
    """A request's client left while its prompt was being prefilled."""
