"""The CUDA kernels of cuda_attention.py: decode attention of left-padded rows.

mlx's `sdpa_vector` (mlx/backend/cuda/scaled_dot_product_attention.cu: the
same tiling, float accumulation and base-2 softmax; one pass up to 1024
keys, two beyond) with row b reading its keys from `starts[b]` on; past
1024 keys the query heads that share a KV head (GQA) are also served from
one read of its keys and values. Compiled by `mx.fast.cuda_kernel` at the
first call; `disagreement` measures them against mlx's masked attention.
"""

from __future__ import annotations

from typing import Any, cast

import mlx.core as mx

HEAD_DIMS = (64, 96, 128)  # what sdpa_vector is built for
ONE_PASS_UP_TO = 1024  # keys of a row that the one-pass kernel takes, as in mlx
MAX_GROUP = 16  # query heads a KV head serves (GQA) that the key kernel holds in registers
BLOCKS = 32  # key blocks a row and KV head is split into: one a lane of the combine kernel
WARPS = 8  # warps a key block: key i of the row goes to warp i % (BLOCKS * WARPS)

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
// 32 warps of 32 lanes: warp w holds output o of part w (lane l: dimensions
// VPT*l ..), lane l the weight `factor` of part l; the transpose through
// `outputs` sums the parts for each dimension, times `total`, into O.
template <typename T, int VPT>
__device__ __forceinline__ void mns_sum_parts(
    float* o, float factor, float total, float (*outputs)[33], T* O) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int j = 0; j < VPT; j++) {
    outputs[lane][warp] = o[j];
    __syncthreads();
    o[j] = mns_warp_sum(outputs[warp][lane] * factor) * total;
    __syncthreads();
  }
  if (lane == 0) {
    for (int j = 0; j < VPT; j++) O[VPT * warp + j] = static_cast<T>(o[j]);
  }
}
"""

# Up to ONE_PASS_UP_TO keys: one block of 32 warps for each row and query
# head reads every 32nd key from the row's start (lane l holds dimensions
# VPT*l .. VPT*l+VPT-1), then the warps are combined through shared memory
# (mlx's kernel_sdpav_1pass). On the H200 it beat the GQA kernel below at
# 128 keys (19 against 50 µs a layer at B=2), which wins from 2K keys on.
_ONE_PASS = """
  __shared__ float outputs[32][33];
  __shared__ float max_scores[32];
  __shared__ float sum_exp_scores[32];
  const int b = blockIdx.z;
  const int first = starts[b] + threadIdx.x / 32;
  const int stride = 32;
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
  mns_sum_parts<T, VPT>(o, factor, total, outputs, out + (b * q_shape[1] + head) * D);
"""

# Pass 1, a block for each row, KV head and key block (WARPS warps): each
# warp reads its keys and values once for all G query heads of the KV head,
# keeping for each head a running max, sum and output (lane l holds
# dimensions VPT*l .. VPT*l+VPT-1); then the block's warps are combined into
# one partial output, sum and max a head. mlx's kernel_sdpav_2pass_1, with
# the row's first key at starts[b] and the GQA group read together.
_KEYS = """
  constexpr int VPT = D / 32;
  __shared__ float outputs[WARPS][33];
  __shared__ float max_scores[G][WARPS];
  __shared__ float sum_exp_scores[G][WARPS];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int kv_head = blockIdx.x;
  const int b = blockIdx.z / BLOCKS;
  const int block = blockIdx.z % BLOCKS;
  const int H = q_shape[1];
  const int kL = k_shape[2];
  const float scale_log2 = scale[0] * MNS_LOG2E;
  const T* K = k + b * k_strides[0] + kv_head * k_strides[1];
  const T* V = v + b * v_strides[0] + kv_head * v_strides[1];
  float qr[G][VPT], o[G][VPT], max_score[G], sum_exp[G];
#pragma unroll
  for (int g = 0; g < G; g++) {
    const T* Q = q + b * q_strides[0] + (kv_head * G + g) * q_strides[1];
#pragma unroll
    for (int j = 0; j < VPT; j++) {
      qr[g][j] = scale_log2 * static_cast<float>(Q[(VPT * lane + j) * q_strides[3]]);
      o[g][j] = 0.f;
    }
    max_score[g] = MNS_NEG_MAX;
    sum_exp[g] = 0.f;
  }
  for (int i = starts[b] + block * WARPS + warp; i < kL; i += BLOCKS * WARPS) {
    const T* Ki = K + i * k_strides[2];
    const T* Vi = V + i * v_strides[2];
    float kr[VPT], vr[VPT];
#pragma unroll
    for (int j = 0; j < VPT; j++) {
      kr[j] = static_cast<float>(Ki[(VPT * lane + j) * k_strides[3]]);
      vr[j] = static_cast<float>(Vi[(VPT * lane + j) * v_strides[3]]);
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
      float score = 0.f;
#pragma unroll
      for (int j = 0; j < VPT; j++) score += qr[g][j] * kr[j];
      score = mns_warp_sum(score);
      const float new_max = fmaxf(max_score[g], score);
      const float factor = exp2f(max_score[g] - new_max);
      const float e = exp2f(score - new_max);
      max_score[g] = new_max;
      sum_exp[g] = sum_exp[g] * factor + e;
#pragma unroll
      for (int j = 0; j < VPT; j++) o[g][j] = o[g][j] * factor + e * vr[j];
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < G; g++) {
      max_scores[g][warp] = max_score[g];
      sum_exp_scores[g][warp] = sum_exp[g];
    }
  }
  __syncthreads();
#pragma unroll
  for (int g = 0; g < G; g++) {
    const float m = lane < WARPS ? max_scores[g][lane] : MNS_NEG_MAX;
    const float block_max = mns_warp_max(m);
    const float s = mns_warp_sum(lane < WARPS ? sum_exp_scores[g][lane] * exp2f(m - block_max) : 0.f);
    const int p = (b * H + kv_head * G + g) * BLOCKS + block;
    if (warp == 0 && lane == 0) {
      sums[p] = s;
      maxs[p] = block_max;
    }
    const float ff = exp2f(max_scores[g][warp] - block_max);
#pragma unroll
    for (int j = 0; j < VPT; j++) {
      outputs[warp][lane] = o[g][j] * ff;
      __syncthreads();
      if (warp == 0) {
        float ot = 0.f;
        for (int w = 0; w < WARPS; w++) ot += outputs[w][lane];
        partials[p * D + VPT * lane + j] = ot;
      }
      __syncthreads();
    }
  }
"""

# Pass 2, a block for each row and query head (32 warps): warp w takes key
# block w's partial output, lanes the blocks' sums and maxes, and the
# transpose through shared memory adds the blocks up (mlx's
# kernel_sdpav_2pass_2).
_COMBINE = """
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
  for (int j = 0; j < VPT; j++) o[j] = partials[(p + warp) * D + VPT * lane + j];
  mns_sum_parts<T, VPT>(o, factor, total, outputs, out + (b * partials_shape[1] + head) * D);
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


def built_for(heads: int, kv_heads: int, head_dim: int) -> bool:
    """A head_dim sdpa_vector knows, and at most MAX_GROUP query heads a KV head."""
    return head_dim in HEAD_DIMS and heads % kv_heads == 0 and heads // kv_heads <= MAX_GROUP


def fits(queries: mx.array, keys: mx.array, values: mx.array) -> bool:
    """One query a row, at a shape the kernels are built for."""
    dim = queries.shape[-1]
    return (
        queries.shape[2] == 1
        and keys.shape[-1] == values.shape[-1] == dim
        and built_for(queries.shape[1], keys.shape[1], dim)
    )


def decode_attention(
    queries: mx.array, keys: mx.array, values: mx.array, starts: mx.array, scale: float
) -> mx.array:
    """Attention of one query a row, (B, H, 1, D), over keys and values
    (B, H_kv, L, D), where row b attends to keys `starts[b]` .. L-1 only:
    what `mx.fast.scaled_dot_product_attention` gives with the mask
    `arange(L) >= starts[:, None]`. The shapes must pass `fits`."""
    B, H, _, D = queries.shape
    kv_heads = keys.shape[1]
    dtype = queries.dtype
    template = [("T", dtype), ("D", D), ("BLOCKS", BLOCKS)]
    qkvs = [queries, keys, values, starts.astype(mx.int32), _scale(scale)]

    def a_block_a_head(name: str, inputs: list[str], source: str, arrays: list) -> mx.array:
        """Run a kernel of 32 warps for each row and query head, into (B, H, 1, D)."""
        return _kernel(name, inputs, ["out"], source)(
            inputs=arrays,
            template=template,
            grid=(H * 1024, 1, B),
            threadgroup=(1024, 1, 1),
            output_shapes=[(B, H, 1, D)],
            output_dtypes=[dtype],
        )[0]

    if keys.shape[2] <= ONE_PASS_UP_TO:
        return a_block_a_head("one_pass", ["q", "k", "v", "starts", "scale"], _ONE_PASS, qkvs)
    by_keys = _kernel(
        "keys", ["q", "k", "v", "starts", "scale"], ["partials", "sums", "maxs"], _KEYS
    )
    parts = by_keys(
        inputs=qkvs,
        template=template + [("G", H // kv_heads), ("WARPS", WARPS)],
        grid=(kv_heads * WARPS * 32, 1, B * BLOCKS),
        threadgroup=(WARPS * 32, 1, 1),
        output_shapes=[(B, H, BLOCKS, D), (B, H, BLOCKS), (B, H, BLOCKS)],
        output_dtypes=[mx.float32] * 3,
    )
    return a_block_a_head("combine", ["partials", "sums", "maxs"], _COMBINE, parts)


def reference(queries, keys, values, starts, scale) -> mx.array:
    """mlx's own masked attention, for what `decode_attention` must equal."""
    mask = mx.arange(keys.shape[2])[None] >= starts[:, None]
    return mx.fast.scaled_dot_product_attention(
        queries, keys, values, scale=scale, mask=mask[:, None, None, :]
    )


def disagreement(
    dtype=mx.bfloat16,
    head_dim: int = 128,
    lengths: tuple[int, ...] = (40, 2100),
    heads: int = 12,
    kv_heads: int = 2,
) -> float:
    """The largest difference between the kernels and `reference` at each
    of `lengths` keys: four rows starting at key 0, n/2, n-1 and n/7, their
    keys a view of a longer buffer (as a cache's are); raises what the
    kernels raise."""
    worst = 0.0
    for n in lengths:
        # explicit keys: mlx's global random state stays as it was
        seeds = mx.random.split(mx.random.key(n), 3)
        buffer = mx.random.normal((4, kv_heads, n + 64, head_dim), key=seeds[0]).astype(dtype)
        keys = buffer[:, :, :n, :]
        values = mx.random.normal((4, kv_heads, n, head_dim), key=seeds[1]).astype(dtype)
        queries = mx.random.normal((4, heads, 1, head_dim), key=seeds[2]).astype(dtype)
        args = (queries, keys, values, mx.array([0, n // 2, n - 1, n // 7]), head_dim**-0.5)
        diff = decode_attention(*args) - reference(*args)
        worst = max(worst, cast(float, diff.abs().max().item()))
    return worst


TOLERANCE = 0.02  # bfloat16 outputs of softmax-weighted averages of N(0, 1) values
