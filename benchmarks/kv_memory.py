#!/usr/bin/env python3
"""KV-cache bytes per token at full precision, 8 and 4 bits, measured from
mlx-lm's cache objects next to the formula of KV_CACHE_QUANTIZATION.md, with
prefill and decode speed at each setting.

    .venv/bin/python benchmarks/kv_memory.py                # the generated demo model
    .venv/bin/python benchmarks/kv_memory.py --model PATH --lengths 4096
    .venv/bin/python benchmarks/kv_memory.py --shapes       # which quantized-attention
                                                            # shapes this backend runs

The cache is quantized from the first token (quantized_kv_start = 0), as
mlx-lm's generate_step does it: full-precision prefill chunks, converted
after each chunk. A setting the backend cannot run prints its error instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mlx.core as mx  # noqa: E402
from mlx_lm import load  # noqa: E402
from mlx_lm.generate import generate_step, maybe_quantize_kv_cache  # noqa: E402
from mlx_lm.models.base import scaled_dot_product_attention  # noqa: E402
from mlx_lm.models.cache import QuantizedKVCache, make_prompt_cache  # noqa: E402

from mlx_native_server.adapter.kv import kv_quantization_works  # noqa: E402
from mlx_native_server.models import demo as demo_model  # noqa: E402

PREFILL_STEP = 2048  # mlx-lm's and the server's default prefill_step_size
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def bytes_per_token(
    layers: int,
    kv_heads: int,
    head_dim: int,
    bits: int | None,
    group_size: int = 64,
    dtype_bytes: int = 2,
) -> float:
    """K and V of one token in every layer. Quantized: `bits` per value plus
    a scale and a bias (in the activation dtype) per `group_size` values."""
    per_value = dtype_bytes if bits is None else bits / 8 + 2 * dtype_bytes / group_size
    return 2 * layers * kv_heads * head_dim * per_value


def _error(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:90] if str(e).strip() else type(e).__name__


def prefill(model, tokens: mx.array, bits: int | None, group_size: int) -> tuple[list, float]:
    """The cache after the prompt, and the prompt's tok/s."""
    cache = make_prompt_cache(model)
    mx.synchronize()
    start = time.perf_counter()
    for i in range(0, tokens.size, PREFILL_STEP):
        model(tokens[i : i + PREFILL_STEP][None], cache=cache)
        maybe_quantize_kv_cache(cache, 0, group_size, bits)
        mx.eval([c.state for c in cache])
    return cache, tokens.size / (time.perf_counter() - start)


def decode(model, cache, n: int, bits: int | None, group_size: int) -> float:
    """mlx-lm's own decode loop (greedy) for n tokens on the cache; tok/s."""
    times = [
        time.perf_counter()
        for _ in generate_step(
            mx.array([1]),
            model,
            max_tokens=n,
            prompt_cache=cache,
            kv_bits=bits,
            kv_group_size=group_size,
            quantized_kv_start=0,
        )
    ]
    return (len(times) - 1) / (times[-1] - times[0])


def measure(model_dir: Path, lengths: list[int], n_decode: int, group_size: int) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    model, _ = load(str(model_dir))
    shape = (
        config["num_hidden_layers"],
        config["num_key_value_heads"],
        config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"],
    )
    dtype = str(model.model.embed_tokens.weight.dtype).split(".")[-1]
    print(
        f"{model_dir.name}: {shape[0]} layers, {shape[1]} KV heads, head_dim {shape[2]}, "
        f"activations {dtype}; group size {group_size}; {mx.default_device()}"
    )
    head = (
        f"{'kv':<6} {'prompt':>7} {'measured B/tok':>14} {'formula B/tok':>13} "
        f"{'cache MiB':>9} {'prefill tok/s':>13} {'decode tok/s':>12}"
    )
    print(head + "\n" + "-" * len(head))
    vocab = config["vocab_size"]
    for bits in (None, 8, 4):
        try:  # warm-up: the first run of each kernel compiles it (mlx's CUDA backend)
            decode(
                model,
                prefill(model, mx.arange(256) % vocab, bits, group_size)[0],
                4,
                bits,
                group_size,
            )
        except Exception:
            pass  # reported below
        label = "full" if bits is None else f"{bits}-bit"
        formula = bytes_per_token(*shape, bits, group_size, DTYPE_BYTES.get(dtype, 2))
        for n in lengths:
            tokens = mx.random.randint(0, vocab, (n,), key=mx.random.key(n))
            try:
                cache, prefill_tps = prefill(model, tokens, bits, group_size)
                nbytes = sum(c.nbytes for c in cache)
                decode_tps = decode(model, cache, n_decode, bits, group_size)
            except Exception as e:  # a backend that cannot run this setting
                print(f"{label:<6} {n:>7}  fails: {_error(e)}")
                continue
            print(
                f"{label:<6} {n:>7} {nbytes / n:>14.1f} {formula:>13.1f} "
                f"{nbytes / 2**20:>9.2f} {prefill_tps:>13.1f} {decode_tps:>12.1f}"
            )


SHAPES = ((8, 1), (48, 1), (8, 32), (48, 32))  # (query heads, query tokens) over 8 KV heads


def probe_shapes() -> None:
    """Quantized attention over a 300-token quantized cache, shape by shape."""
    print(
        f"quantized attention on {mx.default_device()} (mlx {mx.__version__}), 8 KV heads "
        "holding 300 tokens; q = query heads x query tokens (1: decode, 32: prefill "
        "on a quantized cache; 48 heads: GQA as MiniMax M2)"
    )
    cols = "".join(f"{f'q {h}x{n}':>10}" for h, n in SHAPES)
    print(f"{'bits':>4} {'head_dim':>8} {'dtype':<9} {'probe':>6}{cols}")
    for bits in (4, 8):
        for head_dim in (64, 128):
            probe = kv_quantization_works(bits, 64, head_dim)
            for dtype in (mx.float16, mx.bfloat16, mx.float32):
                results = [_attend(bits, head_dim, dtype, h, n) for h, n in SHAPES]
                name = str(dtype).split(".")[-1]
                print(
                    f"{bits:>4} {head_dim:>8} {name:<9} {str(probe):>6}"
                    + "".join(f"{'ok' if r is None else 'FAILS':>10}" for r in results)
                )
                for (h, n), r in zip(SHAPES, results, strict=True):
                    if r is not None:
                        print(f"{'':>21} q {h}x{n}: {r}")


def _attend(bits: int, head_dim: int, dtype, q_heads: int, q_len: int) -> str | None:
    """None if it runs, else the error's first line."""
    kv_heads, kv_len = 8, 300
    try:
        cache = QuantizedKVCache(group_size=64, bits=bits)
        kv = mx.random.normal((1, kv_heads, kv_len, head_dim)).astype(dtype)
        keys, values = cache.update_and_fetch(kv, kv)
        q = mx.random.normal((1, q_heads, q_len, head_dim)).astype(dtype)
        mask = "causal" if q_len > 1 else None
        mx.eval(
            scaled_dot_product_attention(
                q, keys, values, cache=cache, scale=head_dim**-0.5, mask=mask
            )
        )
        return None
    except Exception as e:
        return _error(e)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="an MLX model (default: the generated demo model)")
    p.add_argument(
        "--lengths",
        default="1024,4096,8192",
        help="prompt lengths, multiples of 256 so no cache capacity is left unused [%(default)s]",
    )
    p.add_argument("--decode", type=int, default=64, help="tokens decoded after each prompt")
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument(
        "--shapes",
        action="store_true",
        help="only probe which quantized-attention shapes this backend runs",
    )
    args = p.parse_args(argv)
    if args.shapes:
        probe_shapes()
        return 0
    lengths = [int(n) for n in args.lengths.split(",")]
    with tempfile.TemporaryDirectory(prefix="kv-memory-") as tmp:
        model_dir = args.model or demo_model.generate(Path(tmp) / "demo", progress=lambda *a: None)
        measure(model_dir.resolve(), lengths, args.decode, args.group_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
