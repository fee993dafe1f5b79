"""The CUDA kernels of cuda_experts.py: a decode step's experts, a warp a row.

For a few tokens, mlx 0.32's CUDA `gather_qmm` takes its gather_qmv kernel
only below 8 (token, expert) pairs, and a MoE step has 8 at one token
(MiniMax picks 8 experts). Every decode step therefore ran the tiled
tensor-core kernel (qmm_sm80) with one row a tile, three times a layer: on
the H200 a step of 4 rows (32 pairs) took ~16 ms where its weights need
~2.5 ms of the GPU's bandwidth (benchmarks/README.md).

Here a block takes one pair: it stages that pair's input row in shared
memory, and each of its warps reads whole rows of the pair's expert
(16 bytes a lane at a time, so a warp reads 512 contiguous bytes) and sums
them against it. `gate_up` computes the gate and up projections and their
SwiGLU in one pass (the rounding to the activation dtype of each step is
mlx's); `down` the down projection. Affine-quantized weights of 4 or 8 bits
with scales and biases; float accumulation. Compiled by
`mx.fast.cuda_kernel` at the first call; `disagreement` measures them
against mlx's gather_qmm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn

BITS = (4, 8)
WARPS = 8  # warps a block; each takes ROWS_A_WARP output rows of the block's pair
ROWS_A_WARP = 2
MAX_WIDTH = 8192  # input width whose staged row (4 bytes a value) fits in shared memory

_HEADER = """
__device__ __forceinline__ float mns_lanes_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffff, x, o);
  return x;
}
// Stages row x (K values) as floats in xs by the value's place in its word,
// then its word (xs[j * WORDS + w] holds value EPW * w + j), so that lane l
// reading words 4l .. 4l+3 reads 16 contiguous bytes of xs for each j; and
// the sum of each chunk of 4 words' values in sums.
template <typename T, int K, int BITS>
__device__ __forceinline__ void mns_stage(const T* x, float* xs, float* sums) {
  constexpr int EPW = 32 / BITS;
  constexpr int WORDS = K / EPW;
  for (int e = threadIdx.x; e < K; e += blockDim.x) {
    xs[(e % EPW) * WORDS + e / EPW] = static_cast<float>(x[e]);
  }
  __syncthreads();
  for (int c = threadIdx.x; c < WORDS / 4; c += blockDim.x) {
    float s = 0.f;
    for (int j = 0; j < EPW; j++) {
      for (int i = 0; i < 4; i++) s += xs[j * WORDS + 4 * c + i];
    }
    sums[c] = s;
  }
  __syncthreads();
}
// The dot of one quantized row (w: its K values' words; s, b: its groups'
// scales and biases) with the staged x, summed over the warp's lanes.
template <typename S, int K, int BITS, int GS>
__device__ __forceinline__ float mns_row_dot(
    const float* xs, const float* sums, const uint32_t* w, const S* s, const S* b) {
  constexpr int EPW = 32 / BITS;
  constexpr int WORDS = K / EPW;
  constexpr uint32_t MASK = (1u << BITS) - 1;
  const int lane = threadIdx.x % 32;
  float acc = 0.f;
#pragma unroll
  for (int c = lane; c < WORDS / 4; c += 32) {
    const uint4 q = reinterpret_cast<const uint4*>(w)[c];
    float dot = 0.f;
#pragma unroll
    for (int j = 0; j < EPW; j++) {
      const float4 v = *reinterpret_cast<const float4*>(xs + j * WORDS + 4 * c);
      dot += v.x * static_cast<float>((q.x >> (BITS * j)) & MASK);
      dot += v.y * static_cast<float>((q.y >> (BITS * j)) & MASK);
      dot += v.z * static_cast<float>((q.z >> (BITS * j)) & MASK);
      dot += v.w * static_cast<float>((q.w >> (BITS * j)) & MASK);
    }
    const int g = (4 * EPW * c) / GS;
    acc += static_cast<float>(s[g]) * dot + static_cast<float>(b[g]) * sums[c];
  }
  return mns_lanes_sum(acc);
}
"""

# Block (pair p, rows of its expert): template T (activations), S (scales),
# K (input width), BITS, GS (group size), XDIV (pairs that share an input
# row: the experts a token picks for the gate and up projections, 1 for the
# down projection), WARPS, ROWS_A_WARP. Row n of this block is pair p's
# output n; N is the weights' output width.
_PROLOGUE = """
  constexpr int WORDS = K * BITS / 32;
  constexpr int GROUPS = K / GS;
  __shared__ __align__(16) float xs[K];
  __shared__ float sums[WORDS / 4];
  const int p = blockIdx.y;
  const int N = w_shape[1];
  const int64_t e = static_cast<int64_t>(idx[p]);
  mns_stage<T, K, BITS>(x + static_cast<int64_t>(p / XDIV) * K, xs, sums);
  const int first = (blockIdx.x * WARPS + threadIdx.x / 32) * ROWS_A_WARP;
"""

_GATE_UP = (
    _PROLOGUE
    + """
  for (int n = first; n < first + ROWS_A_WARP && n < N; n++) {
    const int64_t row = e * N + n;
    const float g = static_cast<float>(static_cast<T>(mns_row_dot<S, K, BITS, GS>(
        xs, sums, w + row * WORDS, scales + row * GROUPS, biases + row * GROUPS)));
    const float u = static_cast<float>(static_cast<T>(mns_row_dot<S, K, BITS, GS>(
        xs, sums, w_up + row * WORDS, scales_up + row * GROUPS, biases_up + row * GROUPS)));
    const float silu = static_cast<float>(static_cast<T>(g / (1.f + expf(-g))));
    if (threadIdx.x % 32 == 0) out[static_cast<int64_t>(p) * N + n] = static_cast<T>(silu * u);
  }
"""
)

_DOWN = (
    _PROLOGUE
    + """
  for (int n = first; n < first + ROWS_A_WARP && n < N; n++) {
    const int64_t row = e * N + n;
    const float y = mns_row_dot<S, K, BITS, GS>(
        xs, sums, w + row * WORDS, scales + row * GROUPS, biases + row * GROUPS);
    if (threadIdx.x % 32 == 0) out[static_cast<int64_t>(p) * N + n] = static_cast<T>(y);
  }
"""
)

_INPUTS = {
    "gate_up": ["x", "idx", "w", "scales", "biases", "w_up", "scales_up", "biases_up"],
    "down": ["x", "idx", "w", "scales", "biases"],
}
_SOURCES = {"gate_up": _GATE_UP, "down": _DOWN}
_kernels: dict[str, Any] = {}


def _kernel(name: str):
    if name not in _kernels:
        _kernels[name] = mx.fast.cuda_kernel(
            name=f"mns_experts_{name}",
            input_names=_INPUTS[name],
            output_names=["out"],
            source=_SOURCES[name],
            header=_HEADER,
        )
    return _kernels[name]


@dataclass(frozen=True)
class Quantized:
    """One projection's stacked expert weights as QuantizedSwitchLinear holds
    them: (E, N, K * bits / 32) words, (E, N, K / group_size) scales and biases."""

    weight: mx.array
    scales: mx.array
    biases: mx.array
    bits: int
    group_size: int

    @property
    def width(self) -> int:  # K, the input width
        return self.scales.shape[-1] * self.group_size


def built_for(*projections: Quantized) -> bool:
    """Weights these kernels read: affine 4 or 8 bits, groups of whole
    16-byte chunks, an input row that fits in shared memory, and the same
    quantization for every projection."""
    first = projections[0]
    for q in projections:
        chunk = 4 * 32 // q.bits  # values in 4 words
        if (q.bits, q.group_size) != (first.bits, first.group_size) or q.bits not in BITS:
            return False
        if q.group_size % chunk or q.width % chunk or q.width > MAX_WIDTH:
            return False
    return True


def _run(name: str, x: mx.array, idx: mx.array, projections: list[Quantized], xdiv: int):
    """out (pairs, N): kernel `name` for every (row of x, expert of idx) pair."""
    q = projections[0]
    pairs = idx.size
    n = q.weight.shape[1]
    blocks = -(-n // (WARPS * ROWS_A_WARP))
    arrays: list[mx.array] = [x, idx.astype(mx.uint32)]
    for p in projections:
        arrays += [p.weight, p.scales, p.biases]
    template = [
        ("T", x.dtype),
        ("S", q.scales.dtype),
        ("K", q.width),
        ("BITS", q.bits),
        ("GS", q.group_size),
        ("XDIV", xdiv),
        ("WARPS", WARPS),
        ("ROWS_A_WARP", ROWS_A_WARP),
    ]
    return _kernel(name)(
        inputs=arrays,
        template=template,
        grid=(blocks * WARPS * 32, pairs, 1),
        threadgroup=(WARPS * 32, 1, 1),
        output_shapes=[(pairs, n)],
        output_dtypes=[x.dtype],
    )[0]


def experts(x: mx.array, idx: mx.array, gate: Quantized, up: Quantized, down: Quantized):
    """SwitchGLU with SwiGLU for tokens x (..., K) and their experts idx
    (..., k): (..., k, K_out), each token through each of its experts."""
    k = idx.shape[-1]
    flat = x.reshape(-1, x.shape[-1])
    h = _run("gate_up", flat, idx, [gate, up], k)
    y = _run("down", h, idx, [down], 1)
    return y.reshape(*idx.shape, y.shape[-1])


def reference(x: mx.array, idx: mx.array, gate: Quantized, up: Quantized, down: Quantized):
    """What mlx-lm's SwitchGLU over QuantizedSwitchLinear computes, unsorted."""

    def project(v, q):
        return mx.gather_qmm(
            v, q.weight, q.scales, q.biases, rhs_indices=idx, transpose=True,
            group_size=q.group_size, bits=q.bits,
        )  # fmt: skip

    v = mx.expand_dims(x, (-2, -3))
    return project(nn.silu(project(v, gate)) * project(v, up), down).squeeze(-2)


def random_experts(
    width: int, hidden: int, experts: int, bits: int, group_size: int, dtype, key: mx.array
) -> tuple[Quantized, Quantized, Quantized]:
    """Gate, up and down projections of random weights, quantized as a
    converted model's are (explicit keys: mlx's global random state stays)."""
    keys = mx.random.split(key, 3)
    shapes = [(experts, hidden, width), (experts, hidden, width), (experts, width, hidden)]
    out = []
    for shape, k in zip(shapes, keys, strict=True):
        w = (mx.random.normal(shape, key=k) * shape[-1] ** -0.5).astype(dtype)
        weight, scales, biases = mx.quantize(w, group_size, bits)
        out.append(Quantized(weight, scales, biases, bits, group_size))
    return out[0], out[1], out[2]


def disagreement(
    width: int = 512,
    hidden: int = 256,
    bits: int = 4,
    group_size: int = 64,
    dtype=mx.bfloat16,
    tokens: tuple[int, ...] = (1, 4),
    top_k: int = 8,
) -> float:
    """The largest difference between `experts` and `reference`, relative
    to the largest output, at each of `tokens` tokens with `top_k` experts
    each out of 2 * top_k; raises what the kernels raise."""
    seeds = mx.random.split(mx.random.key(width + hidden), 3)
    gate, up, down = random_experts(width, hidden, 2 * top_k, bits, group_size, dtype, seeds[0])
    worst = 0.0
    for n in tokens:
        x = mx.random.normal((1, n, width), key=seeds[1]).astype(dtype)
        order = mx.argsort(mx.random.uniform(shape=(1, n, 2 * top_k), key=seeds[2]), axis=-1)
        idx = order[..., :top_k].astype(mx.uint32)
        want = reference(x, idx, gate, up, down).astype(mx.float32)
        got = experts(x, idx, gate, up, down).astype(mx.float32)
        scale = max(cast(float, want.abs().max().item()), 1e-6)
        worst = max(worst, cast(float, (got - want).abs().max().item()) / scale)
    return worst


TOLERANCE = 0.03  # bfloat16 outputs: two roundings of the activation apart
