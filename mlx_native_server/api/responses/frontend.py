"""OpenAI Responses API (`POST /v1/responses`, Codex CLI): the encoder.

Stateless (see translate.py). Streams `response.created`, output
items with their text, reasoning and function-call argument events, and
`response.completed` with usage; a failure is `response.failed`. A silent
stretch (long prefill, long tool call) gets SSE comment heartbeats.
"""

from __future__ import annotations

from ...engine.generation import Generation
from ...engine.types import Delta
from ..errors import ApiError
from ..streaming import Event, sse
from .events import Output
from .translate import ResponsesOptions


class ResponsesFrontEnd:
    """One response: numbered events, or the final response object."""

    flavor = "openai"
    messages_param = "input"

    def __init__(self, opts: ResponsesOptions):
        self.stream = opts.stream
        self.out = Output(opts.model, opts.echo)
        self._seq = 0

    def _number(self, events: list[dict]) -> list[Event]:
        for event in events:
            event["sequence_number"] = self._seq
            self._seq += 1
        return [(event["type"], event) for event in events]

    def opening(self, gen: Generation) -> list[Event]:
        return self._number(self.out.start())

    def progress(self, gen: Generation) -> list[Event]:
        return []

    def feed(self, d: Delta) -> list[Event]:
        return self._number(self.out.feed(d))

    def closing(self, gen: Generation) -> list[Event]:
        return self._number(self.out.finish(gen.finish_reason, gen.usage))

    def body(self, gen: Generation) -> dict:
        return self.out.finish(gen.finish_reason, gen.usage)[-1]["response"]

    def heartbeat(self) -> bytes:
        return b": keep-alive\n\n"

    def failure(self, error: ApiError) -> bytes:
        failed = self.out.response("failed")
        failed["error"] = {"code": error.code or error.type, "message": error.message}
        return sse(self._number([{"type": "response.failed", "response": failed}]))
