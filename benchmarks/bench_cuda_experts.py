#!/usr/bin/env python3
"""A decode step's experts on CUDA (adapter/cuda_expert_kernels.py): the
kernels' largest difference from mlx's gather_qmm (at the timed widths, or
with --check-all over a range of shapes), then one layer's experts timed
against mlx-lm's SwitchGLU on gather_qmm at the REAP-50 widths for 1 to 7
tokens.

    .venv/bin/python benchmarks/bench_cuda_experts.py
    .venv/bin/python benchmarks/bench_cuda_experts.py --tokens 1,4 --experts 64
    .venv/bin/python benchmarks/bench_cuda_experts.py --no-check --rows 2,4,8 --baseline-repo ../old

Each timing builds --calls layers' graphs, each picking its own random
experts out of --experts (so the weights come from memory, not the last
call's cache), then evaluates them at once: it prints µs a layer (the
device's time, or the host's dispatch where that is longer) and the GB/s of
expert weights that makes (the distinct experts' bytes, against the GPU's
memory bandwidth: ~4.8 TB/s on the H200), the ways taking turns --rounds
times. --rows times the kernels at more than one ROWS (the weight rows a
group of lanes reads at once), --baseline-repo another checkout's kernels
beside them (the main before a change to them). CUDA only:
elsewhere mlx's gather_qmm serves every step and this exits 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mlx.core as mx  # noqa: E402

from _bench_local import import_file  # noqa: E402
from _demo import ints  # noqa: E402
from mlx_native_server.adapter import cuda_attention  # noqa: E402
from mlx_native_server.adapter import cuda_expert_kernels as kernels  # noqa: E402


def check(args) -> int:
    """Print the kernels' largest difference from mlx at each shape (each
    --rows; bfloat16 at --bits in groups of 64, or with --check-all both
    dtypes, both bit widths, groups of 32 to 128); the number of shapes
    over the tolerance. Each shape compiles mlx's gather_qmm first (~45 s)."""
    shapes = [(mx.bfloat16, args.bits, 64)]
    if args.check_all:
        shapes = [
            (dtype, bits, group_size)
            for dtype in (mx.bfloat16, mx.float16)
            for bits in kernels.BITS
            for group_size in (32, 64, 128)
            if (bits, group_size) != (8, 32)  # fine too, but one 8-bit group size less to compile
        ]
    off = 0
    for dtype, bits, group_size in shapes:
        for rows in args.rows:
            kernels.ROWS = rows
            worst = kernels.disagreement(
                args.width, args.hidden, bits, group_size, dtype, tokens=(1, 2, 4, 7)
            )
            off += worst > kernels.TOLERANCE
            print(f"  {dtype}, {bits} bits, groups of {group_size}, R={rows}: largest {worst:.5f}")
    return off


def timed(f, picks: list[mx.array]) -> float:
    """µs a call of f(idx), one call for each of `picks`, built first and
    then evaluated together."""
    for idx in picks[:5]:
        mx.eval(f(idx))
    outs = [f(idx) for idx in picks]
    t = time.perf_counter()
    mx.eval(outs)
    return (time.perf_counter() - t) / len(picks) * 1e6


def expert_bytes(weights) -> float:
    """Bytes of one expert's three projections (words, scales, biases)."""
    return sum(q.weight.nbytes + q.scales.nbytes + q.biases.nbytes for q in weights) / len(
        weights[0].weight
    )


def baseline_kernels(repo: Path):
    """The experts kernels of another checkout (its cuda_expert_kernels.py), to time beside these."""
    path = repo / "mlx_native_server" / "adapter" / "cuda_expert_kernels.py"
    if not path.is_file():
        raise SystemExit(
            f"no experts kernels at {path}: give --baseline-repo a checkout of this project"
        )
    return import_file("baseline_cuda_expert_kernels", path)


def ways(args) -> list[tuple[str, Callable]]:
    """(label, f(x, idx, weights)) for each way to time: these kernels at each
    --rows, the baseline's, mlx's gather_qmm."""

    def ours(rows: int):
        def f(x, idx, weights):
            kernels.ROWS = rows  # read when the call builds its kernel's template
            return kernels.experts(x, idx, *weights)

        return f

    out = [(f"R={rows}", ours(rows)) for rows in args.rows]
    if args.baseline_repo:
        base = baseline_kernels(args.baseline_repo)
        out.append(("baseline", lambda x, idx, weights: base.experts(x, idx, *weights)))
    out.append(("mlx", lambda x, idx, weights: kernels.reference(x, idx, *weights)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=ints, default=[1, 2, 4, 6, 7], help="tokens a step")
    p.add_argument("--width", type=int, default=3072, help="hidden size [%(default)s]")
    p.add_argument("--hidden", type=int, default=1536, help="an expert's width [%(default)s]")
    p.add_argument("--experts", type=int, default=128, help="experts a layer [%(default)s]")
    p.add_argument("--top-k", type=int, default=8, help="experts a token [%(default)s]")
    p.add_argument("--bits", type=int, default=4, choices=kernels.BITS)
    p.add_argument("--calls", type=int, default=62, help="layers a timing [%(default)s]")
    p.add_argument("--rounds", type=int, default=3, help="timings a way, median [%(default)s]")
    p.add_argument("--no-check", action="store_true", help="time only, no check against mlx")
    p.add_argument("--check-all", action="store_true", help="check 10 shapes, not 1 (~45 s each)")
    p.add_argument(
        "--rows",
        type=ints,
        default=[kernels.ROWS],
        help=f"the kernels' ROWS to time [{kernels.ROWS}]",
    )
    p.add_argument(
        "--baseline-repo", type=Path, help="a checkout whose kernels to time beside these"
    )
    args = p.parse_args(argv)
    if not cuda_attention.applies():
        print(f"the experts kernels are CUDA's; this is {mx.default_device()}.")
        return 2
    off = 0
    if not args.no_check:
        print(f"{mx.default_device()}: the kernels against mlx's gather_qmm")
        off = check(args)
        print(f"shapes over the tolerance of {kernels.TOLERANCE}: {off}\n")
    timings = ways(args)
    key = mx.random.key(0)
    weights = kernels.random_experts(
        args.width, args.hidden, args.experts, args.bits, 64, mx.bfloat16, key
    )
    mx.eval(weights)
    per_expert = expert_bytes(weights)
    labels = [label for label, _ in timings]
    head = "".join(f"{label + ' µs':>12}" for label in labels)
    head += "".join(f"{label + ' ÷ ' + labels[0]:>16}" for label in labels[1:])
    print(f"µs a layer (median of {args.rounds}); GB/s: expert weights read a second")
    print(f"{'tokens':>6} {'pairs':>6}{head} {labels[0] + ' GB/s':>10} {'mlx GB/s':>9}")
    for n in args.tokens:
        x = mx.random.normal((1, n, args.width), key=mx.random.key(n)).astype(mx.bfloat16)
        scores = mx.random.uniform(shape=(args.calls, 1, n, args.experts), key=key)
        order = mx.argsort(scores, axis=-1)[..., : args.top_k].astype(mx.uint32)
        mx.eval(order)
        picks = [order[i] for i in range(args.calls)]
        distinct = statistics.mean(len(set(cast(list, p.flatten().tolist()))) for p in picks)
        gb = distinct * per_expert / 1e3  # GB/s at 1 µs a layer
        rounds: list[list[float]] = [[] for _ in timings]
        for _ in range(args.rounds):  # the ways take turns
            for i, (_, f) in enumerate(timings):
                rounds[i].append(timed(lambda idx, f=f, x=x: f(x, idx, weights), picks))
        times = [statistics.median(r) for r in rounds]
        cells = "".join(f"{t:>12.1f}" for t in times)
        cells += "".join(f"{t / times[0]:>16.2f}" for t in times[1:])
        print(f"{n:>6} {n * args.top_k:>6}{cells} {gb / times[0]:>10.0f} {gb / times[-1]:>9.0f}")
    kernels.ROWS = args.rows[0]
    return 1 if off else 0


if __name__ == "__main__":
    sys.exit(main())
