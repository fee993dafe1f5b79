"""Test hooks (MLX_NATIVE_SERVER_TEST_HOOKS=1 only): make the real engine
spell a chosen reply, or break its generation thread.

mlx only; mlx-lm is reached through the adapter (Upstream.install_script_hook,
Upstream.inject).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import mlx.core as mx

FAIL_MARKER = "<<fail>>"  # a script ending with this makes the engine raise


class _ScriptProcessor:
    """Logits processor that forces the next tokens to spell a script, then
    EOS; with `fail`, it raises once the script is spelt (an engine failure)."""

    def __init__(self, token_ids: list[int], eos_id: int, fail: bool = False):
        self._ids = token_ids + [eos_id]
        self._fail = fail
        self._i = 0

    def __call__(self, tokens, logits):
        if self._fail and self._i >= len(self._ids) - 1:
            raise RuntimeError("the engine failed (test hook)")
        token = self._ids[min(self._i, len(self._ids) - 1)]
        self._i += 1
        vocab = mx.arange(logits.shape[-1])
        forced = mx.where(vocab == token, 0.0, -float("inf")).astype(logits.dtype)
        # Depend on the real logits, so the forward pass still runs each step.
        return mx.depends(mx.broadcast_to(forced, logits.shape), logits)


def script_processors(script: str, encode: Callable[[str], list[int]], eos_id: int) -> list:
    """The logits processors that make a request spell `script` (then EOS);
    a script ending with FAIL_MARKER spells the rest, then raises."""
    fail = script.endswith(FAIL_MARKER)
    text = script[: -len(FAIL_MARKER)] if fail else script
    return [_ScriptProcessor(encode(text), eos_id, fail)]


class _Poison:
    """A request-queue item that breaks the generation thread (test hook):
    upstream unpacks each item first, so unpacking this one blocks, then raises."""

    def __init__(self, hang_seconds: float):
        self.hang_seconds = hang_seconds

    def __iter__(self):
        time.sleep(self.hang_seconds)
        raise RuntimeError("generation thread broken by a test hook")
