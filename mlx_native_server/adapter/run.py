"""One request upstream's engine has taken, as the engine's own `Run`.

`UpstreamRun` wraps mlx-lm's GenerationContext and the iterator of its
Responses, so neither leaves the adapter: the engine and generation.py see
prompt and cache counts, a `TextSplitter`, tool parsing, `stop()` and plain
`Step`s (engine/types.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mlx_lm.generate import TextStateMachine

from ..engine.types import Step


class _Splitter:
    """A TextSplitter over upstream's text state machine (reasoning / tool /
    normal, with the stop words), holding its runtime state."""

    def __init__(self, text_sm: Any, initial: str):
        self.initial = initial
        self._state = text_sm.make_state(initial)

    def split(self, text: str) -> list[tuple[str | None, str]]:
        self._state, segments = TextStateMachine.split(self._state, text)
        return segments

    def flush(self) -> tuple[str, str | None]:
        self._state, text, current = TextStateMachine.flush(self._state)
        return text, current

    def discard(self) -> str | None:
        self._state, current = TextStateMachine.discard(self._state)
        return current


class UpstreamRun:
    """A `Run` (engine/types.py) over upstream's GenerationContext `ctx` and
    its `responses`; `ticket` is the cache.store.Ticket the prompt cache
    fills in when it looks the prompt up."""

    def __init__(self, ctx: Any, responses: Iterable, ticket: Any = None):
        self._ctx = ctx
        self._responses = responses
        self._ticket = ticket
        self.prompt_tokens = len(ctx.prompt)

    @property
    def cached_tokens(self) -> int:
        # Upstream sets it on the generation thread once it has looked the prompt up.
        return self._ctx.prompt_cache_count

    @property
    def cache_lookup(self) -> Any:
        return self._ticket.lookup if self._ticket is not None else None

    @property
    def stopped(self) -> bool:
        # Private upstream flag; a public `GenerationContext.stopped` would replace it.
        return self._ctx._should_stop

    def splitter(self) -> _Splitter:
        return _Splitter(self._ctx.text_sm, self._ctx.initial_state)

    def parse_tools(self, text: str, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """Upstream's tool parser for this model; it returns one call or a list."""
        parsed = self._ctx.tool_parser(text, tools)
        return parsed if isinstance(parsed, list) else [parsed]

    def stop(self) -> None:
        self._ctx.stop()

    def watch(self, track: Callable[[Iterable], Iterable]) -> None:
        """Iterate the responses through `track` (the engine's activity
        tracking for the watchdog); call before iterating."""
        self._responses = track(self._responses)

    def __iter__(self) -> Iterator[Step]:
        for response in self._responses:
            yield Step(response.text, response.finish_reason)
