#!/usr/bin/env python3
"""Engine-only decode speed with a full-precision, 8-bit and 4-bit KV cache
at long contexts: what quantizing the cache costs (or saves) per token.

    .venv/bin/python benchmarks/bench_kv_decode.py                     # demo-wide, 1K/16K/64K
    .venv/bin/python benchmarks/bench_kv_decode.py --contexts 1024,4096 --bits 0,4
    .venv/bin/python benchmarks/bench_kv_decode.py --model PATH --fill model

No server: mlx-lm's own decode loop (generate_step, greedy) over a cache that
already holds the context. By default the cache is filled with random keys
and values (--fill synthetic): decode reads every cached value whatever it
holds, so its speed is the same as after a real prefill, and a 64K context
fills in seconds instead of the hour a CPU prefill of demo-wide takes.
--fill model runs the model over random tokens instead (kv_memory.py's
prefill), to check that claim at a small context. Each setting is warmed up
first; the table shows median tok/s and the ratio to full precision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mlx.core as mx  # noqa: E402
from mlx_lm import load  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402

from _demo import add_model_flags, ints, model_or_demo, same_blas_as_the_server  # noqa: E402
from kv_memory import decode, prefill  # noqa: E402

FILL_CHUNK = 4096  # tokens written to the cache per update, as a prefill step would
WARM_CONTEXT = 256


def synthetic_cache(model, config: dict, n: int, bits: int | None, group_size: int) -> list:
    """A prompt cache holding n tokens of random keys and values in every
    layer, quantized to `bits` (None: full precision) as generate_step would."""
    kv_heads = config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    dtype = model.model.embed_tokens.weight.dtype
    cache = make_prompt_cache(model)
    for i in range(0, n, FILL_CHUNK):
        shape = (1, kv_heads, min(FILL_CHUNK, n - i), head_dim)
        for layer in cache:
            k, v = (mx.random.normal(shape).astype(dtype) for _ in range(2))
            layer.update_and_fetch(k, v)
        mx.eval([c.state for c in cache])
    if bits is not None:
        cache = [c.to_quantized(group_size=group_size, bits=bits) for c in cache]
        mx.eval([c.state for c in cache])
    return cache


def filled(model, config: dict, n: int, bits: int | None, args) -> list:
    if args.fill == "synthetic":
        return synthetic_cache(model, config, n, bits, args.group_size)
    tokens = mx.random.randint(0, config["vocab_size"], (n,), key=mx.random.key(n))
    return prefill(model, tokens, bits, args.group_size)[0]


def measure(model_dir: Path, args) -> dict:
    """{context: {bits label: median tok/s, or an error line}}, printed as it
    goes. Per context every setting's cache is filled, then the settings take
    turns for --rounds rounds of --decode steps (the first switching each
    round), so drift in machine load hits them alike."""
    config = json.loads((model_dir / "config.json").read_text())
    model, _ = load(str(model_dir))
    labels = {"full" if b == 0 else f"{b}-bit": None if b == 0 else b for b in args.bits}
    for bits in labels.values():  # the first run of each kernel compiles it
        decode(model, filled(model, config, WARM_CONTEXT, bits, args), 4, bits, args.group_size)
    results: dict = {}
    for n in args.contexts:
        row, caches = results.setdefault(n, {}), {}
        for label, bits in labels.items():
            try:
                caches[label] = filled(model, config, n, bits, args)
            except Exception as e:  # a backend that cannot run this setting
                row[label] = f"fails: {str(e).strip().splitlines()[0][:80]}"
        samples: dict[str, list[float]] = {label: [] for label in caches}
        order = list(caches)
        for r in range(args.rounds):
            for label in order[r % len(order) :] + order[: r % len(order)]:
                tps = decode(model, caches[label], args.decode, labels[label], args.group_size)
                samples[label].append(tps)
            shown = ", ".join(f"{label} {v[-1]:.2f}" for label, v in samples.items())
            print(f"  {n:>6} tokens, round {r + 1}: {shown} tok/s", flush=True)
        row.update({label: statistics.median(v) for label, v in samples.items()})
        del caches
    return results


def print_table(results: dict, args) -> None:
    labels = ["full" if b == 0 else f"{b}-bit" for b in args.bits]
    ratios = [lab for lab in labels if lab != "full"] if "full" in labels else []
    head = f"{'context':>8}" + "".join(f"{lab + ' tok/s':>14}" for lab in labels)
    head += "".join(f"{lab + '/full':>12}" for lab in ratios)
    print(
        f"\n{mx.default_device()}, medians of {args.rounds} rounds of {args.decode} decode "
        f"steps, fill {args.fill}:"
    )
    print(head + "\n" + "-" * len(head))
    for n, row in results.items():
        cells = [row[lab] for lab in labels]
        line = f"{n:>8}" + "".join(
            f"{c:>14.2f}" if isinstance(c, float) else f"{'fails':>14}" for c in cells
        )
        for lab in ratios:
            ok = isinstance(row[lab], float) and isinstance(row["full"], float)
            line += f"{row[lab] / row['full']:>12.3f}" if ok else f"{'-':>12}"
        print(line)
    for n, row in results.items():
        for lab, c in row.items():
            if not isinstance(c, float):
                print(f"  {n} tokens, {lab}: {c}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add_model_flags(p)
    add("--contexts", type=ints, default=[1024, 16384, 65536], help="tokens [1024,16384,65536]")
    add("--bits", type=ints, default=[0, 8, 4], help="KV bits, 0 = full precision [0,8,4]")
    add("--decode", type=int, default=12, help="decode steps per setting a round [%(default)s]")
    add("--rounds", type=int, default=3, help="rounds per context [%(default)s]")
    add("--group-size", type=int, default=64)
    add("--fill", choices=["synthetic", "model"], default="synthetic", help="[%(default)s]")
    add("--json", type=Path, metavar="PATH", help="write the figures to PATH")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kv-decode-") as tmp:
        model_dir, label = model_or_demo(args.model, Path(tmp), args.demo)
        print(f"{label}: {mx.default_device()}", flush=True)
        results = measure(model_dir, args)
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps({"model": label, "contexts": results}, indent=1))
    return 0


if __name__ == "__main__":
    same_blas_as_the_server()
    sys.exit(main())
