#!/usr/bin/env python3
"""Peak memory of a prefill, above the weights and the KV cache, at several
prefill_step_size values: the measurement behind the prefill working set of
mlx_native_server/memory/footprint.py (KV_CACHE_QUANTIZATION.md, "Memory plan").

    .venv/bin/python benchmarks/prefill_memory.py              # the demo model's shape
    .venv/bin/python benchmarks/prefill_memory.py --grid       # shapes that separate the terms
    .venv/bin/python benchmarks/prefill_memory.py --shape hidden_size=3072,num_attention_heads=48,\
num_key_value_heads=8,head_dim=128,num_local_experts=128,num_experts_per_tok=8,\
intermediate_size=1536,num_hidden_layers=4 --quantize 4 --dtype bfloat16   # REAP-50's layers

The prompt is prefilled the way mlx-lm's generate_step does it: chunks of
prefill_step_size tokens, the cache evaluated (and, with --kv-bits,
quantized from the first token) after each. For every chunk the working set
is mlx's peak active memory during the chunk minus the active memory after
it (weights plus the cache so far); the largest over the chunks is printed,
next to what footprint.prefill_bytes predicts for the last chunk. Weights
are random: memory does not depend on their values. The model is built from
the demo model's config.json with --shape's overrides.
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
import mlx.nn as nn  # noqa: E402
from mlx_lm.generate import maybe_quantize_kv_cache  # noqa: E402
from mlx_lm.models import minimax  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402

from mlx_native_server.memory import device as plan_cmd  # noqa: E402
from mlx_native_server.memory import footprint  # noqa: E402
from mlx_native_server.models import demo as demo_model  # noqa: E402

MiB = 2**20

# Shapes that vary one term at a time around the demo model (2 layers).
GRID = {
    "demo": {},
    "hidden x4": {"hidden_size": 256},
    "heads x4": {"num_attention_heads": 16},
    "experts x4": {"num_local_experts": 16, "num_experts_per_tok": 8},
    "intermediate x8": {"intermediate_size": 512},
}


def build(config: dict, overrides: dict, dtype: str, quantize: int) -> tuple[nn.Module, dict]:
    config = {**config, **overrides}
    model = minimax.Model(minimax.ModelArgs.from_dict(config))
    model.set_dtype(getattr(mx, dtype))
    # Layer by layer, so that only one layer's unquantized weights exist at a time.
    for part in [*model.model.layers, model]:
        if quantize:
            nn.quantize(part, group_size=64, bits=quantize)
        mx.eval(part.parameters())
    if quantize:
        config["quantization"] = {"group_size": 64, "bits": quantize}
    config["torch_dtype"] = dtype
    return model, config


def prefill_peak(
    model, n_tokens: int, step: int, kv_bits: int | None, vocab: int
) -> tuple[int, int, int, float]:
    """(largest working set over the chunks, the KV cache's bytes at the end,
    the largest peak of active memory, weights included, prefill tok/s)."""
    cache = make_prompt_cache(model)
    tokens = mx.random.randint(0, vocab, (n_tokens,), key=mx.random.key(step))
    mx.eval(tokens)
    worst = peak = 0
    start = time.perf_counter()
    for i in range(0, n_tokens, step):
        mx.synchronize()
        mx.reset_peak_memory()
        model(tokens[i : i + step][None], cache=cache)
        maybe_quantize_kv_cache(cache, 0, 64, kv_bits)
        mx.eval([c.state for c in cache])
        mx.synchronize()
        worst = max(worst, mx.get_peak_memory() - mx.get_active_memory())
        peak = max(peak, mx.get_peak_memory())
    return worst, sum(c.nbytes for c in cache), peak, n_tokens / (time.perf_counter() - start)


def run(
    label: str,
    model,
    config: dict,
    n_tokens: int,
    steps: list[int],
    kv_bits: int | None,
    platform: str,
) -> None:
    weights = mx.get_active_memory()
    scores = footprint.scores_materialized(platform, kv_bits is not None)
    for step in steps:
        kv_label = "full" if kv_bits is None else f"{kv_bits}-bit"
        try:
            ws, kv, peak, tps = prefill_peak(model, n_tokens, step, kv_bits, config["vocab_size"])
        except Exception as e:  # a backend that cannot run this setting (CUDA: quantized KV)
            print(
                f"{label:<16} {kv_label:<6} {n_tokens:>7} {step:>6}  fails: "
                f"{str(e).strip().splitlines()[0][:80]}"
            )
            continue
        shape = footprint.Shape.from_config(config)
        predicted = footprint.prefill_bytes(shape, step, n_tokens, scores)
        print(
            f"{label:<16} {kv_label:<6} {n_tokens:>7} {step:>6} {weights / MiB:>10.1f} "
            f"{kv / MiB:>8.1f} {ws / MiB:>12.1f} {predicted / MiB:>12.1f} "
            f"{ws / step:>12.0f} {peak / 1e9:>8.2f} {tps:>8.0f}",
            flush=True,
        )
        mx.clear_cache()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=8192, help="prompt length [%(default)s]")
    p.add_argument(
        "--steps", default="256,512,1024,2048,4096", help="prefill_step_size values [%(default)s]"
    )
    p.add_argument("--kv-bits", default="0,4", help="KV settings, 0 = full precision [%(default)s]")
    p.add_argument("--shape", default="", help="config.json overrides, key=value,...")
    p.add_argument("--grid", action="store_true", help="the shapes of GRID, one term at a time")
    p.add_argument(
        "--dtype",
        default="float32",
        help="activation dtype (the CPU backend runs the experts in float32 only)",
    )
    p.add_argument("--quantize", type=int, default=0, help="quantize the weights to these bits")
    p.add_argument(
        "--memory-limit-gb",
        type=float,
        default=0,
        help="mx.set_memory_limit above the weights, in GB, as start sets it from "
        "the plan: allocations then wait for work in flight [off]",
    )
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    kv_settings = [int(b) or None for b in args.kv_bits.split(",")]
    with tempfile.TemporaryDirectory(prefix="prefill-memory-") as tmp:
        demo = demo_model.generate(Path(tmp) / "demo", progress=lambda *a: None)
        base = json.loads((demo / "config.json").read_text())
    if args.shape:
        shapes = {"custom": {k: int(v) for k, v in (kv.split("=") for kv in args.shape.split(","))}}
    else:
        shapes = GRID if args.grid else {"demo": {}}
    platform = plan_cmd.platform_name()
    print(
        f"{mx.default_device()} ({platform}), mlx {mx.__version__}, activations {args.dtype}; "
        "MiB; working set = peak during a chunk - active after it (largest chunk)"
    )
    head = (
        f"{'shape':<16} {'kv':<6} {'tokens':>7} {'step':>6} {'weights':>10} {'kv cache':>8} "
        f"{'working set':>12} {'formula':>12} {'B per step':>12} {'peak GB':>8} {'tok/s':>8}"
    )
    print(head + "\n" + "-" * len(head))
    for label, overrides in shapes.items():
        model, config = build(base, overrides, args.dtype, args.quantize)
        if args.memory_limit_gb:
            mx.set_memory_limit(mx.get_active_memory() + int(args.memory_limit_gb * 1e9))
        for kv_bits in kv_settings:
            run(label, model, config, args.tokens, steps, kv_bits, platform)
        del model
        mx.clear_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
