"""The two module globals of `mlx_lm.server` this server replaces.

Upstream's generation thread calls `stream_generate` and
`_make_logits_processors` by their module-global names, so wrapping those
names is the only way in. Each wrapper is put in once per process; each says
why it exists and what upstream change would remove it. contract.py checks
that upstream still calls both by those names. On one machine our scheduler
runs the requests and calls `_make_logits_processors` itself; upstream's own
loop, and with it `stream_generate`, still runs under mlx.launch and for
requests with images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlx_lm import server as upstream


class _NoLogprob:
    """Stands in for a token's log-probabilities, which this server never
    returns. Upstream's one-request path reads `logprobs[token].item()` for
    every token; that small eval waits for the next step, which mlx has
    already queued, so the graph of the step after cannot be built meanwhile
    and decoding loses its pipelining (measured: server/direct 0.87 -> see
    benchmarks/README.md)."""

    __slots__ = ()

    def __getitem__(self, _index):
        return self

    def item(self) -> float:
        return 0.0


_NO_LOGPROB = _NoLogprob()


def install_no_logprob_sync(on_failure: Callable[[], object]) -> None:
    """Wrap the stream_generate upstream's one-request path calls (once): no
    per-token logprob sync, and `on_failure()` runs on the generation thread
    when a generation raises, before the error goes on (the engine repairs
    mlx's random state there).

    Patch of `mlx_lm.server.stream_generate`. Removed by an upstream
    `_serve_single` that skips `logprobs[token].item()` when the request asked
    for no logprobs (`args.logprobs` False) and reseeds a broken random state."""
    original = upstream.stream_generate
    if getattr(original, "_mns_wrapped", False):
        return

    def stream_generate(*args, **kwargs):
        try:
            for response in original(*args, **kwargs):
                response.logprobs = _NO_LOGPROB
                yield response
        except Exception:
            on_failure()
            raise

    stream_generate._mns_wrapped = True  # type: ignore[attr-defined]
    upstream.stream_generate = stream_generate


_extra: Callable[[Any], list] | None = None  # the latest install_logits_hook's `extra`


def install_logits_hook(extra: Callable[[Any], list]) -> None:
    """Every request also gets the logits processors `extra(args)` returns
    for its GenerationArguments, after upstream's own (test hooks: a forced
    script). A later call replaces `extra`.

    Patch of `mlx_lm.server._make_logits_processors`. Removed by an upstream
    way to add logits processors per request (a GenerationArguments field)."""
    global _extra
    _extra = extra
    original = upstream._make_logits_processors
    if getattr(original, "_mns_wrapped", False):
        return

    def make_logits_processors(args):
        processors = original(args)
        added = _extra(args) if _extra is not None else []
        return processors + added if added else processors

    make_logits_processors._mns_wrapped = True  # type: ignore[attr-defined]
    upstream._make_logits_processors = make_logits_processors
