#!/usr/bin/env python3
"""A decode step's experts on CUDA (adapter/cuda_expert_kernels.py): the
kernels' largest difference from mlx's gather_qmm over a range of shapes,
then one layer's experts timed two ways (the kernels, mlx-lm's SwitchGLU on
gather_qmm) at the REAP-50 widths for 1 to 7 tokens.

    .venv/bin/python benchmarks/bench_cuda_experts.py
    .venv/bin/python benchmarks/bench_cuda_experts.py --tokens 1,4 --experts 64

Each timing evaluates --calls layers at once, each with its own random
experts (so the weights come from memory, not the last call's cache), and
prints µs a layer. CUDA only: elsewhere mlx's gather_qmm serves every step
and this exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mlx.core as mx  # noqa: E402

from _demo import ints  # noqa: E402
from mlx_native_server.adapter import cuda_attention  # noqa: E402
from mlx_native_server.adapter import cuda_expert_kernels as kernels  # noqa: E402


def check(width: int, hidden: int) -> int:
    """Print the kernels' largest difference from mlx at each shape; the
    number of shapes over the tolerance."""
    off = 0
    for dtype in (mx.bfloat16, mx.float16):
        for bits in kernels.BITS:
            for group_size in (32, 64, 128):
                if bits == 8 and group_size == 32:
                    continue  # fine too, but one 8-bit group size less to compile
                worst = kernels.disagreement(
                    width, hidden, bits, group_size, dtype, tokens=(1, 2, 4, 7)
                )
                off += worst > kernels.TOLERANCE
                print(f"  {dtype}, {bits} bits, groups of {group_size}: largest {worst:.5f}")
    return off


def timed(f, picks: list[mx.array]) -> float:
    """µs a call of f(idx), one call for each of `picks`, evaluated together."""
    for idx in picks[:5]:
        mx.eval(f(idx))
    t = time.perf_counter()
    mx.eval([f(idx) for idx in picks])
    return (time.perf_counter() - t) / len(picks) * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=ints, default=[1, 2, 4, 6, 7], help="tokens a step")
    p.add_argument("--width", type=int, default=3072, help="hidden size [%(default)s]")
    p.add_argument("--hidden", type=int, default=1536, help="an expert's width [%(default)s]")
    p.add_argument("--experts", type=int, default=128, help="experts a layer [%(default)s]")
    p.add_argument("--top-k", type=int, default=8, help="experts a token [%(default)s]")
    p.add_argument("--bits", type=int, default=4, choices=kernels.BITS)
    p.add_argument("--calls", type=int, default=62, help="layers a timing [%(default)s]")
    p.add_argument("--no-check", action="store_true", help="time only (each shape compiles)")
    args = p.parse_args(argv)
    if not cuda_attention.applies():
        print(f"the experts kernels are CUDA's; this is {mx.default_device()}.")
        return 2
    off = 0
    if not args.no_check:
        print(f"{mx.default_device()}: the kernels against mlx's gather_qmm")
        off = check(args.width, args.hidden)
        print(f"shapes over the tolerance of {kernels.TOLERANCE}: {off}\n")
    key = mx.random.key(0)
    weights = kernels.random_experts(
        args.width, args.hidden, args.experts, args.bits, 64, mx.bfloat16, key
    )
    mx.eval(weights)
    print(f"{'tokens':>6} {'pairs':>6} {'kernels µs':>11} {'mlx µs':>8} {'mlx ÷ kernels':>14}")
    for n in args.tokens:
        x = mx.random.normal((1, n, args.width), key=mx.random.key(n)).astype(mx.bfloat16)
        scores = mx.random.uniform(shape=(args.calls, 1, n, args.experts), key=key)
        order = mx.argsort(scores, axis=-1)[..., : args.top_k].astype(mx.uint32)
        mx.eval(order)
        picks = [order[i] for i in range(args.calls)]
        mine = timed(lambda idx, x=x: kernels.experts(x, idx, *weights), picks)
        theirs = timed(lambda idx, x=x: kernels.reference(x, idx, *weights), picks)
        ratio = theirs / mine
        print(f"{n:>6} {n * args.top_k:>6} {mine:>11.1f} {theirs:>8.1f} {ratio:>14.2f}", flush=True)
    return 1 if off else 0


if __name__ == "__main__":
    sys.exit(main())
