#!/usr/bin/env python3
"""The fused decode attention of a left-padded batch on CUDA
(adapter/cuda_kernels.py): its largest difference from mlx's masked
attention over a range of shapes, then one layer's attention timed three
ways (the kernel, mlx masked, mlx unmasked) at the REAP-50 widths.

    .venv/bin/python benchmarks/bench_cuda_attention.py
    .venv/bin/python benchmarks/bench_cuda_attention.py --batches 2,4 --keys 2048,16384

CUDA only: elsewhere mlx's own attention serves batched steps and this
exits 2.
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
from mlx_native_server.adapter import cuda_attention, cuda_kernels  # noqa: E402


def normal(shape, seed: int, dtype) -> mx.array:
    return mx.random.normal(shape, key=mx.random.key(seed)).astype(dtype)


def check(heads: int, kv_heads: int) -> int:
    """Print the kernel's largest difference from mlx at each shape; the
    number of shapes over the tolerance."""
    off = 0
    for dtype in (mx.bfloat16, mx.float16):
        for dim in (64, 96, 128):
            for n in (1, 33, 1024, 1025, 5000):
                worst = cuda_kernels.disagreement(dtype, dim, (n,), heads, kv_heads)
                off += worst > cuda_kernels.TOLERANCE
                print(f"  {dtype}, head_dim {dim}, {n} keys: largest difference {worst:.5f}")
    return off


def timed(f, calls: int) -> float:
    """µs a call, `calls` calls evaluated together after a warm-up."""
    for _ in range(5):
        mx.eval(f())
    t = time.perf_counter()
    mx.eval([f() for _ in range(calls)])
    return (time.perf_counter() - t) / calls * 1e6


def three_ways(queries, keys, values, starts, calls: int) -> list[float]:
    """µs a call of the kernel, of mlx's masked and of mlx's unmasked attention."""
    scale = queries.shape[-1] ** -0.5
    mask = (mx.arange(keys.shape[2])[None] >= starts[:, None])[:, None, None, :]
    sdpa = mx.fast.scaled_dot_product_attention
    return [
        timed(lambda: cuda_kernels.decode_attention(queries, keys, values, starts, scale), calls),
        timed(lambda: sdpa(queries, keys, values, scale=scale, mask=mask), calls),
        timed(lambda: sdpa(queries, keys, values, scale=scale), calls),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=ints, default=[2, 4], help="rows at once [2,4]")
    p.add_argument("--keys", type=ints, default=[128, 2048, 16384, 65536], help="keys a row")
    p.add_argument("--heads", type=int, default=48, help="query heads [%(default)s]")
    p.add_argument("--kv-heads", type=int, default=8, help="KV heads [%(default)s]")
    p.add_argument("--calls", type=int, default=200, help="calls a timing [%(default)s]")
    args = p.parse_args(argv)
    if not cuda_attention.applies():
        print(f"the fused decode attention is CUDA's; this is {mx.default_device()}.")
        return 2
    print(f"{mx.default_device()}: the kernel against mlx's masked attention")
    off = check(args.heads, args.kv_heads)
    print(f"shapes over the tolerance of {cuda_kernels.TOLERANCE}: {off}\n")
    dim = 128
    print(f"{'rows':>5} {'keys':>7} {'kernel µs':>10} {'mlx masked':>11} {'mlx unmasked':>13}")
    for b in args.batches:
        for n in args.keys:
            keys = normal((b, args.kv_heads, n + 256, dim), 1, mx.bfloat16)[:, :, :n, :]
            values = normal((b, args.kv_heads, n + 256, dim), 2, mx.bfloat16)[:, :, :n, :]
            queries = normal((b, args.heads, 1, dim), 3, mx.bfloat16)
            starts = mx.array([3 * i for i in range(b)])
            row = three_ways(queries, keys, values, starts, args.calls)
            print(f"{b:>5} {n:>7} {row[0]:>10.1f} {row[1]:>11.1f} {row[2]:>13.1f}", flush=True)
    return 1 if off else 0


if __name__ == "__main__":
    sys.exit(main())
