#!/usr/bin/env python3
"""Engine-only prefill time by prompt length: one forward of N new tokens
after a C-token context, against one decode step (N = 1) on the same cache.
What a short request's TTFT is made of, and where a backend's prefill stops
scaling with N.

    .venv/bin/python benchmarks/bench_prefill_speed.py                  # demo-wide
    .venv/bin/python benchmarks/bench_prefill_speed.py --model PATH --tokens 1,8,40,512,2048

For each N and round, a fresh cache is prefilled with C random tokens (in
2048-token chunks, as the server does), then the N tokens go through one
forward, evaluated; the table shows the median seconds, tokens a second,
and the time over one decode step's. A MoE reads most of its experts once
N tokens reach them all, so on a GPU the time should stay near one step's
up to a few hundred tokens; a ratio far above 1 at N=40 is a backend's
small-prefill cost (on the H200, ~0.25 s against ~15 ms a step was seen
through the server: benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mlx.core as mx  # noqa: E402
from mlx_lm import load  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402

from _demo import (  # noqa: E402
    add_model_flags,
    ints,
    model_or_demo,
    prefill,
    random_ids,
    same_blas_as_the_server,
)


def forward_seconds(model, vocab: int, context: int, n: int, seed: int) -> float:
    """Seconds of one evaluated forward of n tokens after `context` tokens."""
    cache = make_prompt_cache(model)
    prefill(model, random_ids(vocab, context, seed)[None], cache)
    new = random_ids(vocab, n, seed + 1)[None]
    mx.eval(new)
    t = time.perf_counter()
    mx.eval(model(new, cache=cache)[:, -1, :])
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_flags(p)
    p.add_argument("--tokens", type=ints, default=[1, 8, 40, 128, 512, 2048], help="N values")
    p.add_argument("--context", type=int, default=256, help="tokens before them [%(default)s]")
    p.add_argument("--rounds", type=int, default=3, help="[%(default)s]")
    args = p.parse_args(argv)
    sizes = sorted(set(args.tokens) | {1})
    with tempfile.TemporaryDirectory(prefix="prefill-speed-") as tmp:
        model_dir, label = model_or_demo(args.model, Path(tmp), args.demo)
        model = load(str(model_dir))[0]
        vocab = model.args.vocab_size
        print(f"{label}: {mx.default_device()}, context {args.context}", flush=True)
        for n in sizes:  # compiles the kernels of each shape before anything is timed
            forward_seconds(model, vocab, args.context, n, 0)
        samples: dict[int, list[float]] = {n: [] for n in sizes}
        for r in range(args.rounds):
            for n in sizes if r % 2 == 0 else sizes[::-1]:
                samples[n].append(forward_seconds(model, vocab, args.context, n, 100 * r + n))
                mx.clear_cache()
            print(f"  round {r + 1} done", flush=True)
    step = statistics.median(samples[1])
    print(f"\nmedians of {args.rounds} rounds:")
    print(f"{'tokens':>7} {'seconds':>9} {'tok/s':>9} {'/ one step':>11}")
    for n in sizes:
        s = statistics.median(samples[n])
        print(f"{n:>7} {s:>9.4f} {n / s:>9.1f} {s / step:>11.2f}")
    return 0


if __name__ == "__main__":
    same_blas_as_the_server()
    sys.exit(main())
