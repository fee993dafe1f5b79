"""Anthropic Messages API (`POST /v1/messages`): the encoder.

Streams as Anthropic does: `message_start`, `ping`, content blocks
(thinking with a closing `signature_delta`, text, tool_use), `message_delta`
with the stop reason and usage, `message_stop`; a failure is `event: error`.

`message_start` carries real usage (`input_tokens` without the cached part,
`cache_read_input_tokens`; Claude Code compacts by them), and the cached
count is only known once the engine has looked the prompt up. So it goes
out at the engine's first prefill-progress report (right after that look-
up, before the prefill runs), or at the first delta if that comes first.
Until then the stream's heartbeat is an SSE comment, which every SSE parser
skips; from then on it is a `ping` event, which the SDKs skip, so a long
prefill or a long tool call never leaves the connection silent.
"""

from __future__ import annotations

from ...engine.generation import Generation
from ...engine.types import Delta
from ..errors import ApiError, error_body
from ..streaming import Event, sse
from .blocks import Blocks, message, new_message_id, stop_reason, usage
from .translate import MessagesOptions

_PING: Event = ("ping", {"type": "ping"})


def _cached(gen: Generation) -> int:
    return max(gen.prompt_cache_count, gen.usage.cached_tokens, 0)


def _final_usage(gen: Generation) -> dict:
    u = gen.usage
    return usage(u.prompt_tokens, u.cached_tokens, u.completion_tokens)


class MessagesFrontEnd:
    """One Messages reply: sends message_start once, then blocks and pings."""

    flavor = "anthropic"
    messages_param = "messages"

    def __init__(self, opts: MessagesOptions):
        self.opts = opts
        self.stream = opts.stream
        self.id = new_message_id()
        self.blocks = Blocks(opts.show_thinking)
        self.gen: Generation | None = None
        self.started = False

    def _start(self) -> list[Event]:
        if self.started or self.gen is None:
            return []
        gen = self.gen
        start = message(
            self.opts.model, self.id, [], usage(gen.usage.prompt_tokens, _cached(gen), 0)
        )
        self.started = True
        return [("message_start", {"type": "message_start", "message": start}), _PING]

    def opening(self, gen: Generation) -> list[Event]:
        self.gen = gen
        return []

    def progress(self, gen: Generation) -> list[Event]:
        self.gen = gen
        return self._start() if gen.prompt_cache_count >= 0 else []

    def feed(self, d: Delta) -> list[Event]:
        if not self.stream:
            self.blocks.feed(d)
            return []
        return self._start() + self.blocks.feed(d)

    def closing(self, gen: Generation) -> list[Event]:
        self.gen = gen
        return (
            self._start()
            + self.blocks.close_block()
            + [
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {
                            "stop_reason": stop_reason(gen.finish_reason, gen.stop_sequence),
                            "stop_sequence": gen.stop_sequence,
                        },
                        "usage": _final_usage(gen),
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
        )

    def body(self, gen: Generation) -> dict:
        self.blocks.close_block()
        return message(
            self.opts.model,
            self.id,
            self.blocks.content,
            _final_usage(gen),
            stop_reason(gen.finish_reason, gen.stop_sequence),
            gen.stop_sequence,
        )

    def heartbeat(self) -> bytes:
        return sse([_PING]) if self.started else b": waiting for the engine\n\n"

    def failure(self, error: ApiError) -> bytes:
        return sse([("error", error_body(error, "anthropic"))])
