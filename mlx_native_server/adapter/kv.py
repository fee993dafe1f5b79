"""mlx-lm's KV-cache classes and prompt-cache helpers, for cache/ and the engine.

Re-exported here so that cache/store.py and cache/disk.py reach mlx-lm only
through the adapter; `kv_quantization_works` is the backend probe the engine
and the memory plan share.
"""

from __future__ import annotations

import logging

import mlx.core as mx
from mlx_lm.models.base import scaled_dot_product_attention
from mlx_lm.models.cache import (
    KVCache,
    QuantizedKVCache,
    can_trim_prompt_cache,
    load_prompt_cache,
    save_prompt_cache,
    trim_prompt_cache,
)

__all__ = [
    "KVCache",
    "QuantizedKVCache",
    "can_trim_prompt_cache",
    "kv_quantization_works",
    "load_prompt_cache",
    "save_prompt_cache",
    "trim_prompt_cache",
]

log = logging.getLogger("mlx_native_server.adapter.kv")


def kv_quantization_works(bits: int, group_size: int, head_dim: int) -> bool:
    """Run quantized attention once on this backend (mlx 0.32.4 on CUDA lacks
    `quantized_matmul` for some shapes)."""
    try:
        cache = QuantizedKVCache(group_size=group_size, bits=bits)
        kv = mx.random.normal((1, 2, 8, head_dim)).astype(mx.float16)
        keys, values = cache.update_and_fetch(kv, kv)
        q = mx.random.normal((1, 2, 1, head_dim)).astype(mx.float16)
        out = scaled_dot_product_attention(
            q, keys, values, cache=cache, scale=head_dim**-0.5, mask=None
        )
        mx.eval(out)
        return True
    except Exception as e:  # any backend failure means "cannot quantize here"
        log.debug("KV quantization probe failed: %s", e)
        return False
