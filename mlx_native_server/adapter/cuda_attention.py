"""Batched decode attention on CUDA: one fused kernel for left-padded rows.

mlx 0.32's CUDA `scaled_dot_product_attention` fuses one query against its
keys (its `sdpa_vector` kernels) only when no array mask is given. A batch of
sequences of different lengths is left-padded (mlx-lm's `BatchKVCache`) and
needs one, so every layer of a batched decode step fell back to a matmul, a
masked softmax and a second matmul: on the H200 the scheduler's batched step
stayed at 1.58x / 2.55x of one sequence at B=2 / 4 where one forward of equal
rows, unmasked, reaches 2.19x / 3.15x (benchmarks/README.md).

The mask of a batched decode step says only this: row b sees keys from
`left_padding[b]` on. The kernels of cuda_kernels.py are mlx's own
sdpa_vector with that start for each row (and, past 1024 keys, the query
heads that share a KV head, 6 on MiniMax, served from one read of its keys
and values). Here they go in as the model module's
`scaled_dot_product_attention`, which mlx-lm's attention layers call by that
module-global name; everything that is not a full-precision one-token step
over a `BatchKVCache` goes to mlx-lm's own.
Before going in, the kernels are checked once against mlx's masked attention
on this GPU; when they fail or disagree, mlx's path stays and the log says
why. Removed by an mlx whose CUDA sdpa_vector takes an array mask (or
per-row key offsets).
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

import mlx.core as mx

from .cuda_kernels import TOLERANCE, built_for, decode_attention, disagreement, fits

log = logging.getLogger("mlx_native_server.adapter.cuda_attention")


def applies() -> bool:
    """On the CUDA backend, where mlx has no fused masked decode attention."""
    return mx.cuda.is_available() and mx.default_device() == mx.gpu


def _attention_shape(model) -> tuple[int, int, int]:
    """(query heads, KV heads, head_dim) from mlx-lm's ModelArgs, or a
    GQA shape the kernels take where the names differ."""
    a: Any = getattr(model, "args", None)
    try:
        heads = int(a.num_attention_heads)
        kv_heads = int(getattr(a, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(a, "head_dim", None) or a.hidden_size // heads)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return 12, 2, 128
    return heads, kv_heads, head_dim


_installed: dict[str, bool] = {}  # module name -> whether the kernel went in
_path = "mlx"  # what batched decode attention runs on, for /status (path())


def path() -> str:
    """What a batched decode step's attention runs on, for /status:
    "cuda-kernel" (the kernels here), or "mlx" (mlx's own attention; on CUDA
    with the reason the kernels stayed out)."""
    return _path


def _keep_mlx(why: str) -> bool:
    global _path
    _path = f"mlx ({why})"
    log.warning("batched decode attention stays on mlx's masked path: %s", why)
    return False


def install(model) -> bool:
    """On CUDA, make the model module's attention take `decode_attention` for
    a batched one-token step (once per module, after checking the kernels
    against mlx's attention on this GPU). True when it went in."""
    name = type(model).__module__
    if name in _installed:
        return _installed[name]
    _installed[name] = False
    if not applies():
        return False
    module = importlib.import_module(name)
    original = getattr(module, "scaled_dot_product_attention", None)
    if original is None:
        log.info("%s calls no scaled_dot_product_attention: batched decode keeps mlx's", name)
        return False
    heads, kv_heads, head_dim = _attention_shape(model)
    if not built_for(heads, kv_heads, head_dim):
        return _keep_mlx(
            f"no kernel for {heads} query heads on {kv_heads} KV heads of head_dim {head_dim}"
        )
    began = time.perf_counter()
    log.info("checking the batched decode attention kernel against mlx's masked attention")
    try:  # at the model's own shape, so its kernels are compiled before the first batch
        worst = disagreement(head_dim=head_dim, heads=heads, kv_heads=kv_heads)
    except Exception as e:  # the kernel did not compile or run on this GPU
        return _keep_mlx(f"the kernel failed: {e}")
    if worst > TOLERANCE:
        return _keep_mlx(f"the kernel differs from it by {worst:.4f}")
    from mlx_lm.models.cache import BatchKVCache

    def scaled_dot_product_attention(queries, keys, values, cache, scale, mask, sinks=None):
        if (
            isinstance(mask, mx.array)
            and sinks is None
            and type(cache) is BatchKVCache
            and fits(queries, keys, values)
        ):
            return decode_attention(queries, keys, values, cache.left_padding, scale)
        return original(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)

    scaled_dot_product_attention.original = original  # type: ignore[attr-defined]
    setattr(module, "scaled_dot_product_attention", scaled_dot_product_attention)  # noqa: B010
    _installed[name] = True
    global _path
    _path = "cuda-kernel"
    log.info(
        "batched decode attention: a fused CUDA kernel with per-row key starts (%s; checked in %.1f s)",
        name,
        time.perf_counter() - began,
    )
    return True
