"""The engine's request and event types, and its errors: plain data, no mlx.

Every API front end, translator and encoder works with these, so they (and
their tests) import in milliseconds and run without mlx installed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


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


@dataclass
class Step:
    """One generated token as the engine reports it: its text (possibly
    empty, or several characters) and, on the last one, why generation ended
    ("stop" or "length")."""

    text: str
    finish_reason: str | None = None


class TextSplitter(Protocol):
    """Splits generated text into runs of the reasoning / tool / normal text
    states, stripping the markers that switch between them; it keeps its
    state between calls. State names are "normal", "reasoning", "tool" (or
    None once a stop word ended the text)."""

    initial: str  # the state the reply starts in

    def split(self, text: str) -> list[tuple[str | None, str]]:
        """Consume `text`; one (state, text) segment per state passed, the last
        one the current state. Text that may start a marker is held back."""
        ...

    def flush(self) -> tuple[str, str | None]:
        """(the held-back text, the current state): at a "length" finish."""
        ...

    def discard(self) -> str | None:
        """Drop the held-back text; returns the current state: at a "stop" finish."""
        ...


class Run(Protocol):
    """One request the engine has taken: iterate it for its Steps.

    `prompt_tokens` is known once the engine has taken the request;
    `cached_tokens` (prompt tokens reused from the prompt cache) is -1 and
    `cache_lookup` (a cache.store.Lookup) None until the engine has looked the
    prompt up, which happens before the first Step. `stop()` asks the engine
    to stop at its next token, from any thread."""

    prompt_tokens: int

    @property
    def cached_tokens(self) -> int: ...

    @property
    def cache_lookup(self) -> Any: ...

    @property
    def stopped(self) -> bool: ...

    def splitter(self) -> TextSplitter:
        """A fresh splitter for this request's reply."""
        ...

    def parse_tools(self, text: str, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """The tool calls in the text of one tool block, as dicts with "name",
        "arguments" (a dict or JSON text) and maybe "id"; raises ValueError
        when the text is no valid call."""
        ...

    def stop(self) -> None: ...

    def __iter__(self) -> Iterator[Step]: ...


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
