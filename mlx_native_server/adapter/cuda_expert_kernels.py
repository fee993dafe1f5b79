"""The CUDA kernels of cuda_experts.py: a decode step's experts, lanes a row.

For a few tokens, mlx 0.32's CUDA `gather_qmm` takes its gather_qmv kernel
only below 8 (token, expert) pairs, and a MoE step has 8 at one token
(MiniMax picks 8 experts). Every decode step therefore ran the tiled
tensor-core kernel (qmm_sm80) with one row a tile, three times a layer: on
the H200 a step of 4 rows (32 pairs) took ~16 ms where its weights need
~2.5 ms of the GPU's bandwidth (benchmarks/README.md).

Here a block takes one pair: it stages that pair's input row in shared
memory, and each group of L lanes (32 for a 3072-wide row at 4 bits, 16
for 1536) sums ROWS weight rows of the pair's expert against it at once,
16 bytes a lane at a time, so that a lane has ROWS loads in flight (2 *
ROWS for the gate and up projections) for each read of the staged row.
The packed values become floats by masking them into a float's mantissa
(no conversion instruction, whose rate bounded the first version at ~1 TB/s
on the H200). `gate_up` computes the gate and up projections and their
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
WARPS = 8  # warps a block, all on the block's pair
ROWS = 4  # weight rows a group of lanes sums at once (of each projection: gate_up reads 2 * ROWS)
MAX_WIDTH = 8192  # input width whose staged row (4 bytes a value) fits in shared memory

_HEADER = """
// Value j of word q as a float times 2^(BITS * (j % HALF)), HALF being the
// values in 16 bits: the value's bits masked in place (the high half of the
// word shifted down first) into the mantissa of 2^23, less 2^23. Exact, and
// two integer operations a value where a conversion instruction is one at a
// quarter of their rate; the staged x carries the power of two back.
template <int BITS>
__device__ __forceinline__ float mns_value(uint32_t q, int j) {
  constexpr int HALF = 16 / BITS;
  constexpr uint32_t MASK = (1u << BITS) - 1;
  const uint32_t h = j < HALF ? q : q >> 16;
  const uint32_t m = (h & (MASK << (BITS * (j % HALF)))) | 0x4B000000u;
  return __uint_as_float(m) - 8388608.f;
}
// Stages row x (K values) as floats in xs by the value's place in its word,
// then its word (xs[j * WORDS + w] holds value EPW * w + j, times
// 2^-(BITS * (j % HALF)) for mns_value), so that lane l reading words
// 4l .. 4l+3 reads 16 contiguous bytes of xs for each j; and the sum of each
// chunk of 4 words' values (unscaled) in sums.
template <typename T, int K, int BITS>
__device__ __forceinline__ void mns_stage(const T* x, float* xs, float* sums) {
  constexpr int EPW = 32 / BITS;
  constexpr int HALF = 16 / BITS;
  constexpr int WORDS = K / EPW;
  for (int e = threadIdx.x; e < K; e += blockDim.x) {
    const int j = e % EPW;
    xs[j * WORDS + e / EPW] = static_cast<float>(x[e]) / static_cast<float>(1u << (BITS * (j % HALF)));
  }
  for (int c = threadIdx.x; c < WORDS / 4; c += blockDim.x) {
    float s = 0.f;
    for (int i = 0; i < 4 * EPW; i++) s += static_cast<float>(x[4 * EPW * c + i]);
    sums[c] = s;
  }
  __syncthreads();
}
// The dots of NP * R quantized rows with the staged x, by a group of L
// lanes: rows[p] + r * WORDS is the r-th row of projection p (its words),
// scales[p] / biases[p] + r * GROUPS its groups'. Lane i of the group reads
// chunks (4 words) i, i + L, ..., all NP * R rows' chunk together against the
// one x chunk; acc[p][r] is the group's whole sum, in each of its lanes.
template <typename S, int K, int BITS, int GS, int L, int R, int NP>
__device__ __forceinline__ void mns_dots(
    const float* xs, const float* sums, const uint32_t* const* rows,
    const S* const* scales, const S* const* biases, float (&acc)[NP][R]) {
  constexpr int EPW = 32 / BITS;
  constexpr int WORDS = K / EPW;
  constexpr int CHUNKS = WORDS / 4;
  constexpr int GROUPS = K / GS;
  const int i = threadIdx.x % L;
#pragma unroll
  for (int p = 0; p < NP; p++)
#pragma unroll
    for (int r = 0; r < R; r++) acc[p][r] = 0.f;
#pragma unroll
  for (int t = 0; t < (CHUNKS + L - 1) / L; t++) {
    const int c = i + t * L;
    if (CHUNKS % L == 0 || c < CHUNKS) {
      uint4 q[NP][R];
#pragma unroll
      for (int p = 0; p < NP; p++)
#pragma unroll
        for (int r = 0; r < R; r++) q[p][r] = reinterpret_cast<const uint4*>(rows[p] + r * WORDS)[c];
      float dot[NP][R];
#pragma unroll
      for (int p = 0; p < NP; p++)
#pragma unroll
        for (int r = 0; r < R; r++) dot[p][r] = 0.f;
#pragma unroll
      for (int j = 0; j < EPW; j++) {
        const float4 v = *reinterpret_cast<const float4*>(xs + j * WORDS + 4 * c);
#pragma unroll
        for (int p = 0; p < NP; p++)
#pragma unroll
          for (int r = 0; r < R; r++) {
            dot[p][r] += v.x * mns_value<BITS>(q[p][r].x, j) + v.y * mns_value<BITS>(q[p][r].y, j)
                + v.z * mns_value<BITS>(q[p][r].z, j) + v.w * mns_value<BITS>(q[p][r].w, j);
          }
      }
      const int g = (4 * EPW * c) / GS;
      const float xsum = sums[c];
#pragma unroll
      for (int p = 0; p < NP; p++)
#pragma unroll
        for (int r = 0; r < R; r++) {
          const float s = static_cast<float>(scales[p][r * GROUPS + g]);
          const float b = static_cast<float>(biases[p][r * GROUPS + g]);
          acc[p][r] += s * dot[p][r] + b * xsum;
        }
    }
  }
#pragma unroll
  for (int p = 0; p < NP; p++)
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int o = L / 2; o > 0; o >>= 1) acc[p][r] += __shfl_xor_sync(0xffffffff, acc[p][r], o);
}
"""

# A block of WARPS warps takes pair p (blockIdx.y) and WARPS * (32 / L) * R
# consecutive rows of its expert's output: each group of L lanes R of them.
# Template: T (activations), S (scales), K (input width), BITS, GS (group
# size), XDIV (pairs that share an input row: the experts a token picks for
# the gate and up projections, 1 for the down projection), WARPS, L, R.
# N is the weights' output width, a multiple of R; a group past it reads
# the first rows and writes nothing.
_PROLOGUE = """
  constexpr int WORDS = K * BITS / 32;
  constexpr int GROUPS = K / GS;
  __shared__ __align__(16) float xs[K];
  __shared__ float sums[WORDS / 4];
  const int p = blockIdx.y;
  const int N = w_shape[1];
  const int64_t e = static_cast<int64_t>(idx[p]);
  mns_stage<T, K, BITS>(x + static_cast<int64_t>(p / XDIV) * K, xs, sums);
  const int group = (blockIdx.x * WARPS + threadIdx.x / 32) * (32 / L) + (threadIdx.x % 32) / L;
  const int first = group * R;
  const int64_t row = e * N + (first < N ? first : 0);
  const bool writes = threadIdx.x % L == 0;
"""

_GATE_UP = (
    _PROLOGUE
    + """
  const uint32_t* rows[2] = {w + row * WORDS, w_up + row * WORDS};
  const S* s[2] = {scales + row * GROUPS, scales_up + row * GROUPS};
  const S* b[2] = {biases + row * GROUPS, biases_up + row * GROUPS};
  float acc[2][R];
  mns_dots<S, K, BITS, GS, L, R, 2>(xs, sums, rows, s, b, acc);
  for (int r = 0; r < R; r++) {
    const int n = first + r;
    if (writes && n < N) {
      const float g = static_cast<float>(static_cast<T>(acc[0][r]));
      const float u = static_cast<float>(static_cast<T>(acc[1][r]));
      const float silu = static_cast<float>(static_cast<T>(g / (1.f + expf(-g))));
      out[static_cast<int64_t>(p) * N + n] = static_cast<T>(silu * u);
    }
  }
"""
)

_DOWN = (
    _PROLOGUE
    + """
  const uint32_t* rows[1] = {w + row * WORDS};
  const S* s[1] = {scales + row * GROUPS};
  const S* b[1] = {biases + row * GROUPS};
  float acc[1][R];
  mns_dots<S, K, BITS, GS, L, R, 1>(xs, sums, rows, s, b, acc);
  for (int r = 0; r < R; r++) {
    const int n = first + r;
    if (writes && n < N) out[static_cast<int64_t>(p) * N + n] = static_cast<T>(acc[0][r]);
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
    16-byte chunks, an input row that fits in shared memory, output rows in
    whole sets of ROWS, and the same quantization for every projection."""
    first = projections[0]
    for q in projections:
        chunk = 4 * 32 // q.bits  # values in 4 words
        if (q.bits, q.group_size) != (first.bits, first.group_size) or q.bits not in BITS:
            return False
        if q.group_size % chunk or q.width % chunk or q.width > MAX_WIDTH:
            return False
        if q.weight.shape[1] % ROWS:
            return False
    return True


def lanes_a_row(q: Quantized) -> int:
    """The lanes of a warp that read one weight row: the most, up to 32,
    that divide its 16-byte chunks evenly (32 at 3072 4-bit values, 16 at
    1536), so that no lane idles on a row's last chunks."""
    chunks = q.width * q.bits // 128
    return min(32, chunks & -chunks)


def _run(name: str, x: mx.array, idx: mx.array, projections: list[Quantized], xdiv: int):
    """out (pairs, N): kernel `name` for every (row of x, expert of idx) pair."""
    q = projections[0]
    pairs = idx.size
    n = q.weight.shape[1]
    lanes = lanes_a_row(q)
    blocks = -(-n // (WARPS * 32 // lanes * ROWS))
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
        ("L", lanes),
        ("R", ROWS),
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
