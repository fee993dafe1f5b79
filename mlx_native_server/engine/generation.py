"""One request's generation as plain events, for every API front end.

The engine hands back a `Run` (engine/types.py) that yields `Step`s (a
token's text); this turns them into `Delta`s of reasoning, answer text and
parsed tool calls, and at the end a finish reason and usage. The OpenAI,
Anthropic and Responses front ends only format these. Pure: it sees the
engine only through `Run`, so it imports no mlx.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .types import ChatRequest, Delta, Run, Timing, ToolCall, Usage, new_call_id

if TYPE_CHECKING:  # the engine imports mlx; this module stays pure
    from .engine import Engine

log = logging.getLogger("mlx_native_server.engine.generation")


class Generation:
    """Run `request` on `engine`; iterate to get Deltas.

    After iteration, `finish_reason` is "stop", "length" or "tool_calls",
    `stop_sequence` the stop string that ended it (if one did), and `usage`
    and `timing` are filled in. `cancel()` stops the engine at the next token.
    """

    def __init__(self, engine: Engine, request: ChatRequest, progress=None, waiting=None):
        self.request = request
        self.timing = Timing()
        self.run: Run = engine.generate(request, progress=progress, waiting=waiting)
        self.usage = Usage(prompt_tokens=self.run.prompt_tokens)
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None
        self._raw = ""  # the tail of the raw text, for stop words only
        # A tail long enough to hold any stop word plus one token's text.
        self._keep = 2 * max(map(len, request.stop)) + 256 if request.stop else 0
        self.cache_lookup: Any = None  # a cache.store.Lookup once the prompt is looked up

    def cancel(self) -> None:
        self.run.stop()

    @property
    def prompt_cache_count(self) -> int:
        """Prompt tokens found in the prompt cache; -1 until the engine has looked."""
        return self.run.cached_tokens

    def __iter__(self) -> Iterator[Delta]:
        try:
            yield from self._events()
        finally:
            self.timing.done = time.monotonic()
            self.run.stop()

    def _events(self) -> Iterator[Delta]:
        run = self.run
        splitter = run.splitter()
        current: str | None = splitter.initial
        prev: str | None = current
        tool_text = ""
        made_call = False
        finish = "stop"
        at_start = True  # answer text after </think> starts without blank lines
        for step in run:
            if self.timing.first_token is None:
                self.timing.first_token = time.monotonic()
                # the engine has looked the prompt up before its first token
                self.usage.cached_tokens = max(run.cached_tokens, 0)
                self.cache_lookup = run.cache_lookup
            self.usage.completion_tokens += 1
            if current == "reasoning":
                self.usage.reasoning_tokens += 1
            if self._keep:
                self._raw = (self._raw + step.text)[-self._keep :]
            segments: list[tuple[str | None, str]]
            if step.finish_reason == "stop":
                current = splitter.discard()
                segments = [(current, "")]
            elif step.finish_reason == "length":
                segments = splitter.split(step.text)
                flushed, current = splitter.flush()
                segments.append((current, flushed))
            else:
                segments = splitter.split(step.text)
            for current, text in segments:
                if prev == "tool" and current != "tool":
                    for call in self._parse_tool(tool_text):
                        made_call = True
                        yield Delta("tool_call", call=call)
                    tool_text = ""
                if current == "tool":
                    tool_text += text
                elif current == "normal" and text:
                    if at_start:
                        text = text.lstrip("\n")
                        at_start = not text
                    if text:
                        yield Delta("text", text)
                elif current == "reasoning" and text:
                    yield Delta("reasoning", text)
                prev = current
            if step.finish_reason is not None:
                finish = step.finish_reason
            elif self._stop_in_tail(len(step.text)):
                break  # finish stays "stop"; __iter__ stops the engine
        if prev == "tool" and tool_text:
            for call in self._parse_tool(tool_text):
                made_call = True
                yield Delta("tool_call", call=call)
        if finish == "stop" and made_call:
            finish = "tool_calls"
        self.finish_reason = finish
        if finish == "stop":
            self.stop_sequence = self._matched_stop()

    def _parse_tool(self, text: str) -> list[ToolCall]:
        try:
            parsed = self.run.parse_tools(text, self.request.tools)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            log.warning(
                "could not parse a tool call (%s: %s); the text was %r",
                type(e).__name__,
                e,
                text[:200],
            )
            return []
        calls = []
        for item in parsed:
            args = item.get("arguments", {})
            if not isinstance(args, str):
                args = json.dumps(args, ensure_ascii=False)
            calls.append(
                ToolCall(id=item.get("id") or new_call_id(), name=item["name"], arguments=args)
            )
        return calls

    def _stop_in_tail(self, n_new: int) -> bool:
        """A stop word ends in the last `n_new` characters. Upstream matches stop
        words on token ids, which misses one tokenised differently in context
        (' STOP' is not 'STOP'); the text state machine strips it either way."""
        if not n_new or not self.request.stop:
            return False
        tail = self._raw[-(n_new + max(len(w) for w in self.request.stop) - 1) :]
        return any(w in tail for w in self.request.stop)

    def _matched_stop(self) -> str | None:
        best, best_pos = None, -1
        for word in self.request.stop:
            pos = self._raw.rfind(word)
            if pos > best_pos:
                best, best_pos = word, pos
        return best
