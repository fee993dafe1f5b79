"""One request as the scheduler runs it: its prompt, its KV cache, its
sampler, and how each new token becomes a Response on its queue.

A Sequence is prefilled on its own single-sequence cache (the same chunks
`generate_step` would run), then decodes alone or in a batch (decode.py).
`emit` keeps upstream's one-request semantics (`stream_generate` plus
`ResponseGenerator._serve_single`): eos ends the reply without its text, the
token that reaches max_tokens is the last, a stop word ends it on its token.
"""

from __future__ import annotations

from dataclasses import dataclass
from queue import Queue
from typing import Any

import mlx.core as mx
from mlx_lm import server as upstream


@dataclass
class Sequence:
    """`key` is the tokens the cache holds (the prompt cache's key for it);
    `todo` the prompt tokens still to feed, the last of which gives the
    first sampled token."""

    rqueue: Queue
    ctx: Any  # upstream's GenerationContext, which the HTTP side reads
    ticket: Any  # the prompt cache's per-request ticket (cache.store.Ticket)
    cache: list  # per-layer single-sequence caches (while not in a batch)
    key: list[int]
    todo: list[int]
    max_tokens: int
    sampler: Any
    processors: list
    stop_matcher: Any
    detokenizer: Any
    eos_ids: frozenset[int]
    prompt_total: int
    generated: int = 0
    done: bool = False
    waited: bool = False  # its first token waited once for prompts that came during its prefill
    context: Any = None  # the tokens logits processors see, as generate_step keeps them

    @property
    def stopped(self) -> bool:
        return self.ctx._should_stop

    def progress(self) -> None:
        done = self.prompt_total - len(self.todo)
        self.rqueue.put((done, self.prompt_total))

    def fed(self, tokens: list[int]) -> None:
        """`tokens` of the prompt went into the cache."""
        self.key.extend(tokens)
        if self.processors:
            self.see(mx.array(tokens))

    def see(self, tokens: mx.array) -> None:
        """Add `tokens` to what the logits processors see."""
        self.context = tokens if self.context is None else mx.concatenate([self.context, tokens])

    def process(self, logits: mx.array) -> mx.array:
        """Logits (1, vocab) through this request's logits processors."""
        for processor in self.processors:
            logits = processor(self.context, logits)
        return logits

    def emit(self, token: int) -> None:
        """Hand `token` to the client; `done` once the reply has ended."""
        self.generated += 1
        finish = None
        if token in self.eos_ids:
            finish = "stop"
            self.detokenizer.finalize()
        else:
            self.detokenizer.add_token(token)
            if self.generated >= self.max_tokens:
                finish = "length"
                self.detokenizer.finalize()
        if self.stop_matcher.advance(token):
            finish = "stop"
        text = self.detokenizer.last_segment
        # No logprobs: this server never returns them (upstream types the empty tuple too tightly).
        self.rqueue.put(upstream.Response(text, token, 0.0, finish, ()))  # type: ignore[arg-type]
        if finish is not None:
            self.done = True

    def end(self, error: BaseException | None = None) -> None:
        """Close the request's queue: its error, or the end of its stream."""
        self.done = True
        self.rqueue.put(error if error is not None else None)
