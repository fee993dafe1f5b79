#!/usr/bin/env python3
"""Engine-only decode of B sequences at once: the scheduler's batched step
(adapter/decode.py) against the engine's ceiling, one forward over B equal
rows of a plain cache. No server, no HTTP: what the batch itself costs.

    .venv/bin/python benchmarks/bench_batch_decode.py                  # demo-wide, B=1,2,4
    .venv/bin/python benchmarks/bench_batch_decode.py --model PATH --kv-bits 0
    .venv/bin/python benchmarks/bench_batch_decode.py --model PATH --repeat-layers 2

Three ways to run each B, taking turns each round:
- `ceiling`: B rows prefilled together to the same length, then one forward
  a step on mlx-lm's plain cache (quantized as generate_step would, at
  --kv-bits from --quantized-kv-start), pipelined as generate_step (the next
  step queued before the current tokens are read), greedy;
- `scheduler`: B prompts of slightly different lengths prefilled one by one
  and joined into a `Running` (batched, left-padded caches with per-row
  masks, or the lone sequence's own cache at B=1), each step's tokens handed
  to the sequences as the server does (`Sequence.emit`: detokenizer, stop
  matcher, its queue);
- `forced`: the same with the test hook's forced-reply logits processor on
  every row (what bench_concurrency.py and bench_overhead.py put on each
  request).
More ways are diagnostics, to find where the batched step loses (--ways):
- `nomask`: the scheduler with the batch's padding mask left out of
  attention (wrong replies: what the mask costs);
- `perrow`: the scheduler with each row's attention run alone over its own
  keys, no mask, so the fused kernel runs (the same replies; full-precision
  KV only, at 4 bits it is the scheduler);
- `mlxmask`: the scheduler with mlx's own masked attention in place of the
  fused CUDA kernel (adapter/cuda_attention.py) the server puts in: what
  that kernel gains. Elsewhere it is the scheduler;
- `mlxexperts`: the scheduler with mlx-lm's own experts (gather_qmm) in place
  of the CUDA kernels the server puts in (adapter/cuda_experts.py); the
  ceiling runs those kernels too. Elsewhere it is the scheduler.
The table shows tok/s (all rows together) and the ratio to B=1 of the same way;
a second one splits a step of each way in two: the host's
ms to build and queue the next forward, and its ms waiting for the previous
one's tokens. A wait near 0 means the host bounds the step (the device idles
while Python and mlx build and dispatch the graph); a long wait, the device.
--repeat-layers K runs the model's layers K times over (the same weights, a
cache each): the full depth of a model whose checkpoint holds part of it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mlx.core as mx  # noqa: E402
from mlx_lm import load  # noqa: E402
from mlx_lm.generate import make_stop_sequences, maybe_quantize_kv_cache  # noqa: E402
from mlx_lm.models import switch_layers  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from _demo import (  # noqa: E402
    add_model_flags,
    ints,
    model_or_demo,
    prefill,
    random_ids,
    same_blas_as_the_server,
)
from mlx_native_server.adapter import cuda_attention, cuda_experts  # noqa: E402
from mlx_native_server.adapter.decode import KVQuantization, Running  # noqa: E402
from mlx_native_server.adapter.sequence import Sequence  # noqa: E402
from mlx_native_server.engine.hooks import script_processors  # noqa: E402

WAYS = ("ceiling", "scheduler", "forced")
DIAGNOSTICS = ("nomask", "perrow", "mlxmask", "mlxexperts")
GREEDY = make_sampler(0.0)


class _Vocab:
    """Tokens for random prompts: skip the ends of the vocabulary (special tokens)."""

    def __init__(self, size: int):
        self.size = size

    def tokens(self, n: int, seed: int) -> list[int]:
        return random_ids(self.size, n, seed).tolist()


@dataclass
class Run:
    """One measurement: tok/s, and each step's host seconds queueing the
    next forward and waiting for the previous one's tokens."""

    tps: float = 0.0
    queue: list[float] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)

    def step(self, queue_next, read_last):
        """queue_next(), then read_last(), each timed; what each returned."""
        t0 = time.perf_counter()
        queued = queue_next()
        t1 = time.perf_counter()
        read = read_last()
        self.queue.append(t1 - t0)
        self.wait.append(time.perf_counter() - t1)
        return queued, read


def ceiling(model, vocab: _Vocab, batch: int, context: int, steps: int, kv) -> Run:
    """One forward a step over `batch` equal rows of a plain cache."""
    cache = make_prompt_cache(model)
    prompt = mx.array([vocab.tokens(context, 1000 + i) for i in range(batch)])
    y = mx.argmax(prefill(model, prompt, cache)[:, -1, :], axis=-1)
    maybe_quantize_kv_cache(cache, kv.start, kv.group_size, kv.bits)
    mx.eval(y)

    def next_step(y):
        nxt = mx.argmax(model(y[:, None], cache=cache)[:, -1, :], axis=-1)
        maybe_quantize_kv_cache(cache, kv.start, kv.group_size, kv.bits)
        mx.async_eval(nxt)
        return nxt

    y = next_step(y)
    y.tolist()  # the first step compiles the kernels for this shape
    run = Run()
    t = time.perf_counter()
    for _ in range(steps):
        y, _ = run.step(lambda y=y: next_step(y), y.tolist)
    y.tolist()
    run.tps = batch * steps / (time.perf_counter() - t)
    return run


def _sequence(model, tokenizer, prompt: list[int], processors: list) -> Sequence:
    """A request as the scheduler builds one, with no client behind its queue."""
    return Sequence(
        rqueue=Queue(),
        ctx=SimpleNamespace(_should_stop=False),
        ticket=None,
        cache=make_prompt_cache(model),
        key=[],
        todo=list(prompt),
        max_tokens=1 << 30,
        sampler=GREEDY,
        processors=processors,
        stop_matcher=make_stop_sequences(tokenizer, []).matcher(),
        detokenizer=tokenizer.detokenizer,
        eos_ids=frozenset(),
        prompt_total=len(prompt),
    )


def scheduler(model, tokenizer, vocab, batch, args, kv, way: str) -> Run:
    """`batch` sequences, prefilled one by one, joined into a Running and
    decoded with the scheduler's own step and hand-off."""
    running, steps = Running(model, kv), args.steps
    for i in range(batch):
        prompt = vocab.tokens(args.context + 3 * i, 2000 + i)  # unequal lengths: left padding
        procs = []
        if way == "forced":
            text = " ".join(["word"] * (steps * 2 + 16))
            procs = script_processors(text, tokenizer.encode, tokenizer.eos_token_id)
        seq = _sequence(model, tokenizer, prompt, procs)
        prefill(model, mx.array(seq.todo[:-1])[None], seq.cache)
        running.quantize_single(seq.cache)
        seq.fed(seq.todo[:-1])
        seq.todo = seq.todo[-1:]
        running.join(seq, running.first_token(seq))
    if way == "perrow" and batch > 1:
        for layer in running.cache or []:
            if hasattr(layer, "left_padding") and not hasattr(layer, "bits"):
                layer.row_starts = layer.left_padding.tolist()

    def one_step(run: Run):
        assert running.pending is not None  # the last step's tokens, which step() leaves
        (sampled, _), tokens = run.step(running.step, running.pending.tolist)
        for seq, token in zip(running.seqs, tokens, strict=True):
            seq.key.append(token)
            seq.emit(token)
        running.settle([], sampled)
        for seq in running.seqs:  # the HTTP side would take these
            while not seq.rqueue.empty():
                seq.rqueue.get_nowait()

    one_step(Run())
    run = Run()
    t = time.perf_counter()
    for _ in range(steps):
        one_step(run)
    run.tps = batch * steps / (time.perf_counter() - t)
    return run


class _Swaps:
    """The model module's attention helpers and mlx-lm's experts, swapped
    for a diagnostic way."""

    def __init__(self, model):
        cuda_attention.install(model)  # as the scheduler's Running does, before these are read
        cuda_experts.install(model)
        self.module = importlib.import_module(type(model).__module__)
        self.mask = self.module.create_attention_mask
        self.sdpa = self.module.scaled_dot_product_attention
        self.experts = switch_layers.SwitchGLU.__call__

    @contextlib.contextmanager
    def way(self, way: str):
        if way == "nomask":
            self.module.create_attention_mask = self._no_mask
        elif way == "perrow":
            self.module.scaled_dot_product_attention = self._per_row
        elif way == "mlxmask":  # the fused kernel's wrapper keeps mlx-lm's own
            self.module.scaled_dot_product_attention = getattr(self.sdpa, "original", self.sdpa)
        elif way == "mlxexperts":
            glu = switch_layers.SwitchGLU
            glu.__call__ = getattr(self.experts, "original", self.experts)  # type: ignore[method-assign]
        try:
            yield
        finally:
            self.module.create_attention_mask = self.mask
            self.module.scaled_dot_product_attention = self.sdpa
            switch_layers.SwitchGLU.__call__ = self.experts  # type: ignore[method-assign]

    def _no_mask(self, h, cache=None, **kwargs):
        return None if h.shape[1] == 1 else self.mask(h, cache, **kwargs)

    def _per_row(self, queries, keys, values, cache, scale, mask, sinks=None):
        starts = getattr(cache, "row_starts", None)
        if starts is None or queries.shape[2] != 1:
            return self.sdpa(
                queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks
            )
        rows = [
            mx.fast.scaled_dot_product_attention(
                queries[b : b + 1], keys[b : b + 1, :, s:], values[b : b + 1, :, s:], scale=scale
            )
            for b, s in enumerate(starts)
        ]
        return mx.concatenate(rows, axis=0)


def measure(model, tokenizer, args) -> dict:
    vocab = _Vocab(model.args.vocab_size)
    kv = KVQuantization(args.kv_bits or None, 64, args.quantized_kv_start)
    swaps, ways = _Swaps(model), args.ways
    samples: dict[str, dict[int, list[Run]]] = {w: {b: [] for b in args.batches} for w in ways}
    for r in range(args.rounds):
        for b in args.batches:
            for way in ways[r % len(ways) :] + ways[: r % len(ways)]:
                if way == "ceiling":
                    run = ceiling(model, vocab, b, args.context, args.steps, kv)
                else:
                    with swaps.way(way):
                        run = scheduler(model, tokenizer, vocab, b, args, kv, way)
                samples[way][b].append(run)
                mx.clear_cache()
            shown = ", ".join(f"{w} {samples[w][b][-1].tps:.1f}" for w in ways)
            print(f"  round {r + 1}, B={b}: {shown} tok/s", flush=True)

    def ms(runs: list[Run], part: str) -> float:
        return 1e3 * statistics.median(x for run in runs for x in getattr(run, part))

    tps = {
        w: {b: statistics.median(r.tps for r in v) for b, v in s.items()}
        for w, s in samples.items()
    }
    steps = {
        w: {b: [ms(v, "queue"), ms(v, "wait")] for b, v in s.items()} for w, s in samples.items()
    }
    return {"results": tps, "step_ms": steps}


def print_table(figures: dict, args) -> None:
    results, base = figures["results"], min(args.batches)
    head = f"{'way':<11}" + "".join(f"{f'B={b} tok/s':>12}" for b in args.batches)
    head += "".join(f"{f'B={b}/{base}':>9}" for b in args.batches if b != base)
    print(
        f"\n{mx.default_device()}, kv_bits {args.kv_bits}, context ~{args.context}, "
        f"medians of {args.rounds} rounds of {args.steps} steps:"
    )
    print(head + "\n" + "-" * len(head))
    for way, row in results.items():
        line = f"{way:<11}" + "".join(f"{row[b]:>12.2f}" for b in args.batches)
        line += "".join(f"{row[b] / row[base]:>9.3f}" for b in args.batches if b != base)
        print(line)
    if figures["step_ms"]:
        print("\nms a step, median: queueing the next forward / waiting for the last one's tokens")
        print(f"{'way':<11}" + "".join(f"{f'B={b}':>16}" for b in args.batches))
        for way, row in figures["step_ms"].items():
            print(f"{way:<11}" + "".join(f"{f'{q:.2f} / {w:.2f}':>16}" for q, w in row.values()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add_model_flags(p)
    add("--repeat-layers", type=int, default=1, metavar="K", help="run the layers K times over")
    add("--batches", type=ints, default=[1, 2, 4], help="sequences at once [1,2,4]")
    add("--context", type=int, default=64, help="prompt tokens a sequence [%(default)s]")
    add(
        "--ways",
        type=lambda t: [w for w in t.split(",") if w],
        default=list(WAYS),
        help=f"of {','.join(WAYS + DIAGNOSTICS)} [{','.join(WAYS)}]",
    )
    add("--steps", type=int, default=32, help="decode steps a measurement [%(default)s]")
    add("--rounds", type=int, default=3, help="[%(default)s]")
    add("--kv-bits", type=int, default=4, help="0: full precision [%(default)s]")
    add("--quantized-kv-start", type=int, default=0, help="[%(default)s]")
    add("--json", type=Path, metavar="PATH", help="write the figures to PATH")
    args = p.parse_args(argv)
    if unknown := set(args.ways) - set(WAYS + DIAGNOSTICS):
        p.error(f"unknown ways: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="batch-decode-") as tmp:
        model_dir, label = model_or_demo(args.model, Path(tmp), args.demo)
        model, tokenizer = load(str(model_dir))
        if args.repeat_layers > 1:
            model.model.layers = list(model.model.layers) * args.repeat_layers
            label += f", layers run {args.repeat_layers}x over ({len(model.layers)} in all)"
        print(f"{label}: {mx.default_device()}", flush=True)
        figures = measure(model, tokenizer, args)
    print_table(figures, args)
    if args.json:  # results: {way: {B: median tok/s}}; step_ms: {way: {B: [queue, wait]}}
        args.json.write_text(json.dumps({"model": label, **figures}, indent=1))
    return 0


if __name__ == "__main__":
    same_blas_as_the_server()
    sys.exit(main())
