"""Batched decode attention on CUDA: one fused kernel for left-padded rows.

mlx 0.32's CUDA `scaled_dot_product_attention` fuses one query against its
keys (its `sdpa_vector` kernels) only when no array mask is given. A batch of
sequences of different lengths is left-padded (mlx-lm's `BatchKVCache`) and
needs one, so every layer of a batched decode step fell back to a matmul, a
masked softmax and a second matmul: on the H200 the scheduler's batched step
stayed at 1.58x / 2.55x of one sequence at B=2 / 4 where one forward of equal
rows, unmasked, reaches 2.19x / 3.15x (benchmarks/README.md).

The mask of a batched decode step says only this: row b sees keys from
`left_padding[b]` on. The kernels below are mlx's own sdpa_vector (one and
two passes, the same tiling, float accumulation, base-2 softmax) with that
one change: each row starts reading its keys at its own start. They are
built with `mx.fast.cuda_kernel` (compiled at the first use) and go in as the
model module's `scaled_dot_product_attention`, which mlx-lm's attention
layers call by that module-global name; everything that is not a
full-precision one-token step over a `BatchKVCache` goes to mlx-lm's own.
Before going in, the kernels are checked once against mlx's masked attention
on this GPU; when they fail or disagree, mlx's path stays and the log says
why. Removed by an mlx whose CUDA sdpa_vector takes an array mask (or
per-row key offsets).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, cast

import mlx.core as mx

log = logging.getLogger("mlx_native_server.adapter.cuda_attention")

HEAD_DIMS = (64, 96, 128)  # what sdpa_vector is built for
ONE_PASS_UP_TO = 1024  # keys one pass takes; more take two, as in mlx
BLOCKS = 32  # key blocks of the first of two passes (one a lane of the second)

_HEADER = """
__device__ __forceinline__ float mns_warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffff, x, o);
  return x;
}
__device__ __forceinline__ float mns_warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, o));
  return x;
}
#define MNS_NEG_MAX (-3.402823466e+38f)
#define MNS_LOG2E 1.44269504089f
"""

# The key loop both kernels share: warp `warp` of `warps` reads every
# `stride`-th key from `first`; lane l holds dimensions VPT*l .. VPT*l+VPT-1.
_SETUP = """
  constexpr int VPT = D / 32;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int head = blockIdx.x;
  const int kv_head = head / (q_shape[1] / k_shape[1]);
  const int kL = k_shape[2];
  const float scale_log2 = scale[0] * MNS_LOG2E;
  const T* Q = q + b * q_strides[0] + head * q_strides[1];
  const T* K = k + b * k_strides[0] + kv_head * k_strides[1];
  const T* V = v + b * v_strides[0] + kv_head * v_strides[1];
  float qr[VPT], o[VPT];
  for (int i = 0; i < VPT; i++) {
    qr[i] = scale_log2 * static_cast<float>(Q[(VPT * lane + i) * q_strides[3]]);
    o[i] = 0.f;
  }
  float max_score = MNS_NEG_MAX;
  float sum_exp = 0.f;
  for (int i = first; i < kL; i += stride) {
    const T* Ki = K + i * k_strides[2];
    const T* Vi = V + i * v_strides[2];
    float score = 0.f;
    for (int j = 0; j < VPT; j++) {
      score += qr[j] * static_cast<float>(Ki[(VPT * lane + j) * k_strides[3]]);
    }
    score = mns_warp_sum(score);
    float new_max = fmaxf(max_score, score);
    float factor = exp2f(max_score - new_max);
    float e = exp2f(score - new_max);
    max_score = new_max;
    sum_exp = sum_exp * factor + e;
    for (int j = 0; j < VPT; j++) {
      o[j] = o[j] * factor + e * static_cast<float>(Vi[(VPT * lane + j) * v_strides[3]]);
    }
  }
"""

# 32 warps over the keys, then across the warps (kernel_sdpav_1pass).
_ONE_PASS = (
    """
  __shared__ float outputs[32][33];
  __shared__ float max_scores[32];
  __shared__ float sum_exp_scores[32];
  const int b = blockIdx.z;
  const int first = starts[b] + threadIdx.x / 32;
  const int stride = 32;
"""
    + _SETUP
    + """
  if (lane == 0) {
    max_scores[warp] = max_score;
    sum_exp_scores[warp] = sum_exp;
  }
  __syncthreads();
  max_score = max_scores[lane];
  float all_max = mns_warp_max(max_score);
  float factor = exp2f(max_score - all_max);
  float total = mns_warp_sum(sum_exp_scores[lane] * factor);
  total = total == 0.f ? 0.f : 1.f / total;
  for (int i = 0; i < VPT; i++) {
    outputs[lane][warp] = o[i];
    __syncthreads();
    o[i] = mns_warp_sum(outputs[warp][lane] * factor) * total;
    __syncthreads();
  }
  if (lane == 0) {
    T* O = out + (b * q_shape[1] + head) * D;
    for (int i = 0; i < VPT; i++) O[VPT * warp + i] = static_cast<T>(o[i]);
  }
"""
)

# BLOCKS blocks of 8 warps over the keys, each writing its partial output,
# sum and max (kernel_sdpav_2pass_1).
_PASS_1 = (
    """
  __shared__ float outputs[8][33];
  __shared__ float max_scores[8];
  __shared__ float sum_exp_scores[8];
  const int b = blockIdx.z / BLOCKS;
  const int block = blockIdx.z % BLOCKS;
  const int first = starts[b] + block * 8 + threadIdx.x / 32;
  const int stride = BLOCKS * 8;
"""
    + _SETUP
    + """
  if (lane == 0) {
    max_scores[warp] = max_score;
    sum_exp_scores[warp] = sum_exp;
  }
  __syncthreads();
  float m = lane < 8 ? max_scores[lane] : MNS_NEG_MAX;
  float block_max = mns_warp_max(m);
  float s = lane < 8 ? sum_exp_scores[lane] * exp2f(m - block_max) : 0.f;
  s = mns_warp_sum(s);
  const int p = (b * q_shape[1] + head) * BLOCKS + block;
  if (warp == 0 && lane == 0) {
    sums[p] = s;
    maxs[p] = block_max;
  }
  const float ff = exp2f(max_scores[warp] - block_max);
  for (int i = 0; i < VPT; i++) {
    outputs[warp][lane] = o[i] * ff;
    __syncthreads();
    if (warp == 0) {
      float ot = 0.f;
      for (int j = 0; j < 8; j++) ot += outputs[j][lane];
      o[i] = ot;
    }
    __syncthreads();
  }
  if (warp == 0) {
    for (int i = 0; i < VPT; i++) partials[p * D + VPT * lane + i] = o[i];
  }
"""
)

# One block a head and row: warp w takes block w's partial (kernel_sdpav_2pass_2).
_PASS_2 = """
  constexpr int VPT = D / 32;
  __shared__ float outputs[32][33];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int b = blockIdx.z;
  const int head = blockIdx.x;
  const int p = (b * partials_shape[1] + head) * BLOCKS;
  const float m = maxs[p + lane];
  const float all_max = mns_warp_max(m);
  const float factor = exp2f(m - all_max);
  float total = mns_warp_sum(sums[p + lane] * factor);
  total = total == 0.f ? 0.f : 1.f / total;
  float o[VPT];
  for (int i = 0; i < VPT; i++) o[i] = partials[(p + warp) * D + VPT * lane + i];
  for (int i = 0; i < VPT; i++) {
    outputs[lane][warp] = o[i];
    __syncthreads();
    o[i] = mns_warp_sum(outputs[warp][lane] * factor) * total;
    __syncthreads();
  }
  if (lane == 0) {
    T* O = out + (b * partials_shape[1] + head) * D;
    for (int i = 0; i < VPT; i++) O[VPT * warp + i] = static_cast<T>(o[i]);
  }
"""

_kernels: dict[str, Any] = {}
_scales: dict[float, mx.array] = {}


def _scale(scale: float) -> mx.array:
    """The softmax scale as a kernel input, made once (a model has one)."""
    if scale not in _scales:
        _scales[scale] = mx.array([scale], dtype=mx.float32)
    return _scales[scale]


def _kernel(name: str, inputs: list[str], outputs: list[str], source: str):
    if name not in _kernels:
        _kernels[name] = mx.fast.cuda_kernel(
            name=f"mns_decode_attention_{name}",
            input_names=inputs,
            output_names=outputs,
            source=source,
            header=_HEADER,
            ensure_row_contiguous=False,  # the cache's keys are a view of its buffer: no copy
        )
    return _kernels[name]


def decode_attention(
    queries: mx.array, keys: mx.array, values: mx.array, starts: mx.array, scale: float
) -> mx.array:
    """Attention of one query a row, (B, H, 1, D), over keys and values
    (B, H_kv, L, D), where row b attends to keys `starts[b]` .. L-1 only:
    what `mx.fast.scaled_dot_product_attention` gives with the mask
    `arange(L) >= starts[:, None]`."""
    B, H, _, D = queries.shape
    dtype = queries.dtype
    template = [("T", dtype), ("D", D), ("BLOCKS", BLOCKS)]
    qkv = [queries, keys, values, starts.astype(mx.int32), _scale(scale)]
    names = ["q", "k", "v", "starts", "scale"]
    if keys.shape[2] <= ONE_PASS_UP_TO:
        one = _kernel("one_pass", names, ["out"], _ONE_PASS)
        return one(
            inputs=qkv,
            template=template,
            grid=(H * 1024, 1, B),
            threadgroup=(1024, 1, 1),
            output_shapes=[(B, H, 1, D)],
            output_dtypes=[dtype],
        )[0]
    first = _kernel("pass_1", names, ["partials", "sums", "maxs"], _PASS_1)
    partials, sums, maxs = first(
        inputs=qkv,
        template=template,
        grid=(H * 256, 1, B * BLOCKS),
        threadgroup=(256, 1, 1),
        output_shapes=[(B, H, BLOCKS, D), (B, H, BLOCKS), (B, H, BLOCKS)],
        output_dtypes=[mx.float32] * 3,
    )
    second = _kernel("pass_2", ["partials", "sums", "maxs"], ["out"], _PASS_2)
    return second(
        inputs=[partials, sums, maxs],
        template=template,
        grid=(H * 1024, 1, B),
        threadgroup=(1024, 1, 1),
        output_shapes=[(B, H, 1, D)],
        output_dtypes=[dtype],
    )[0]


def reference(queries, keys, values, starts, scale) -> mx.array:
    """mlx's own masked attention, for what `decode_attention` must equal."""
    mask = mx.arange(keys.shape[2])[None] >= starts[:, None]
    return mx.fast.scaled_dot_product_attention(
        queries, keys, values, scale=scale, mask=mask[:, None, None, :]
    )


def disagreement(dtype=mx.bfloat16, head_dim: int = 128) -> float:
    """The largest difference between the kernels and `reference`, at a
    one-pass and a two-pass key length, over views of a larger buffer (as a
    cache's keys are); raises what the kernels raise."""
    worst = 0.0
    keys_of = mx.random.split(mx.random.key(0), 3)  # mlx's global random state stays as it was
    for length, starts in ((40, [0, 7, 39]), (2100, [0, 1500, 3])):
        buffer = mx.random.normal((3, 2, length + 16, head_dim), key=keys_of[0]).astype(dtype)
        keys = buffer[:, :, :length, :]
        values = mx.random.normal((3, 2, length, head_dim), key=keys_of[1]).astype(dtype)
        queries = mx.random.normal((3, 12, 1, head_dim), key=keys_of[2]).astype(dtype)
        rows = mx.array(starts)
        ours = decode_attention(queries, keys, values, rows, head_dim**-0.5)
        theirs = reference(queries, keys, values, rows, head_dim**-0.5)
        worst = max(worst, cast(float, (ours - theirs).abs().max().item()))
    return worst


TOLERANCE = 0.02  # bfloat16 outputs of softmax-weighted averages of N(0, 1) values


def applies() -> bool:
    """On the CUDA backend, where mlx has no fused masked decode attention."""
    return mx.cuda.is_available() and mx.default_device() == mx.gpu


_installed: dict[str, bool] = {}  # module name -> whether the kernel went in


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
    try:
        worst = disagreement()
    except Exception as e:  # the kernel did not compile or run on this GPU
        log.warning(
            "batched decode attention stays on mlx's masked path: the kernel failed (%s)", e
        )
        return False
    if worst > TOLERANCE:
        log.warning(
            "batched decode attention stays on mlx's masked path: the kernel differs by %.4f", worst
        )
        return False
    from mlx_lm.models.cache import BatchKVCache

    def scaled_dot_product_attention(queries, keys, values, cache, scale, mask, sinks=None):
        if (
            queries.shape[2] == 1
            and isinstance(mask, mx.array)
            and sinks is None
            and type(cache) is BatchKVCache
            and queries.shape[-1] in HEAD_DIMS
            and keys.shape[-1] == values.shape[-1] == queries.shape[-1]
        ):
            return decode_attention(queries, keys, values, cache.left_padding, scale)
        return original(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)

    scaled_dot_product_attention.original = original  # type: ignore[attr-defined]
    setattr(module, "scaled_dot_product_attention", scaled_dot_product_attention)  # noqa: B010
    _installed[name] = True
    log.info("batched decode attention: a fused CUDA kernel with per-row key starts (%s)", name)
    return True
