"""What one context costs: a model's shape and the bytes it takes at n tokens.

Pure arithmetic over config.json's numbers, no mlx: the KV cache per token,
the working set of a prefill chunk, and the peak of a context (its KV cache
plus its last chunk's working set, and the moment of the switch to a
quantized cache). KV_CACHE_QUANTIZATION.md ("Memory plan", "Prefill working
set") gives the formulas and the measurements behind them. memory/plan.py
adds the weights, the prompt cache and the runtime, and gives the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

KV_STEP = 256  # mlx-lm's KVCache grows in steps of this many tokens
# Prefill values alive per prompt token, fitted on the demo model's shape
# (2-18% above every measurement: KV_CACHE_QUANTIZATION.md, Memory plan).
PER_TOKEN_HIDDEN, PER_TOKEN_HEAD, PER_TOKEN_EXPERT_HIDDEN, PER_TOKEN_EXPERT_INTER = 4, 7, 3, 2
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Shape:
    """What of config.json the memory depends on."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    experts_per_token: int
    intermediate: int
    dtype_bytes: int  # activations
    weight_bits: float  # bits per weight, scales and biases included

    @classmethod
    def from_config(cls, config: dict) -> Shape:
        heads = config["num_attention_heads"]
        q = config.get("quantization") or config.get("quantization_config") or {}
        dtype = DTYPE_BYTES.get(str(config.get("torch_dtype", "bfloat16")), 2)
        bits = (q["bits"] + 32 / q.get("group_size", 64)) if "bits" in q else 8 * dtype
        return cls(
            config["num_hidden_layers"],
            config["hidden_size"],
            heads,
            config.get("num_key_value_heads", heads),
            config.get("head_dim") or config["hidden_size"] // heads,
            config.get("num_experts_per_tok") or 1,  # a dense model: one MLP
            config.get("moe_intermediate_size") or config.get("intermediate_size", 0),
            dtype,
            bits,
        )


def kv_per_token(shape: Shape, bits: int, group_size: int) -> float:
    """K and V of one token in every layer (KV_CACHE_QUANTIZATION.md): bits
    per value plus a scale and a bias per group, or the activation dtype."""
    per_value = bits / 8 + 2 * shape.dtype_bytes / group_size if bits else shape.dtype_bytes
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * per_value


def _slots(tokens: int) -> int:
    return -(-tokens // KV_STEP) * KV_STEP


def scores_materialized(platform: str, quantized: bool) -> bool:
    """Whether a prefill chunk holds its attention scores (chunk x context):
    mlx-lm's quantized attention always does, as does mlx's attention on the
    CPU; the fused kernels of Metal and CUDA (measured on an H200) do not."""
    return quantized or platform == "linux-cpu"


def prefill_bytes(shape: Shape, step: int, context: int, scores: bool) -> int:
    """Working set of a prefill chunk of `step` tokens attending to `context`
    tokens: activations per token, the scores and their causal mask, and the
    copy of one layer's cache as it grows. GPUs run further layers ahead as
    room allows: mlx's memory limit (apply_limits sets it to the plan's)
    makes them wait instead, at no measured cost in speed."""
    values = (
        PER_TOKEN_HIDDEN * shape.hidden
        + PER_TOKEN_HEAD * shape.heads * shape.head_dim
        + shape.experts_per_token
        * (PER_TOKEN_EXPERT_HIDDEN * shape.hidden + PER_TOKEN_EXPERT_INTER * shape.intermediate)
    )
    out = step * values * shape.dtype_bytes
    if scores:
        out += step * context * (shape.heads * shape.dtype_bytes + 1)
    return out + int(context * kv_per_token(shape, 0, 64) / shape.layers)


def peak(
    shape: Shape,
    platform: str,
    tokens: int,
    step: int,
    *,
    bits: int,
    group_size: int,
    quantized_start: int,
) -> tuple[int, int, int]:
    """(KV at `tokens`, the last chunk's working set, the larger of the two
    moments' KV + working set), prefilling in chunks of `step` with the cache
    quantized to `bits` (0: never) from `quantized_start` tokens on."""
    full, quant = kv_per_token(shape, 0, 64), kv_per_token(shape, bits, group_size)
    step = min(step, tokens)
    quantized = bool(bits) and tokens > quantized_start
    kv = int(_slots(tokens) * (quant if quantized else full))
    ws = prefill_bytes(shape, step, tokens, scores_materialized(platform, quantized))
    top = kv + ws
    if quantized:  # the switch: the full-precision cache and its quantized copy
        n = _slots(min(tokens, quantized_start + step))
        switch_ws = prefill_bytes(shape, step, n, scores_materialized(platform, False))
        top = max(top, int(n * (full + quant)) + switch_ws)
    return kv, ws, top
