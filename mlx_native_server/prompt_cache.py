"""The prompt cache the engine keeps KV states in.

mlx-lm 0.32.2's server builds its LRUPromptCache without a byte budget and
only trims it on the batched path, so with a quantized KV cache
`--prompt-cache-bytes` is ignored (mlx-lm #1118, #1390). Here the budget is
given to the cache itself, which enforces it on every insert, whatever path
the request took.
"""

from __future__ import annotations

from mlx_lm.models.cache import LRUPromptCache

from .config import Settings


def make_prompt_cache_store(settings: Settings) -> LRUPromptCache:
    """The prompt cache for this configuration (entries and byte budget)."""
    return LRUPromptCache(
        max_size=settings.prompt_cache_size,
        max_bytes=settings.prompt_cache_bytes or (1 << 62),
    )
