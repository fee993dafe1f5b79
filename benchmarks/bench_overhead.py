#!/usr/bin/env python3
"""What the server costs over mlx-lm itself: decode tok/s and time to first
token of the server against `mlx_lm.stream_generate` on the same model,
prompt, forced reply, greedy sampler and KV settings, in one run.

    .venv/bin/python benchmarks/bench_overhead.py               # demo model(s), generated
    .venv/bin/python benchmarks/bench_overhead.py --model PATH  # a real model

The two sides alternate, round by round (the first side switches each round),
after one warm-up each, so drift in machine load hits both alike; the table
shows medians. The server is started by ./start-server.sh on a free port with
test hooks on, so the reply is forced (`x_mns_script`) and both sides decode
exactly the same tokens. Each round uses a new prompt and the server's prompt
cache is off (direct has none) unless --prompt-cache. benchmarks/README.md
explains the figures.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mlx.core as mx  # noqa: E402
from mlx_lm import load, stream_generate  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from _demo import FILLER, demo_model, forced_reply  # noqa: E402
from live_server import LiveServer  # noqa: E402
from mlx_native_server.adapter.kv import kv_quantization_works  # noqa: E402
from mlx_native_server.core import config  # noqa: E402
from mlx_native_server.engine.engine import _head_dim  # noqa: E402
from mlx_native_server.engine.hooks import _ScriptProcessor  # noqa: E402

GOAL_RATIO = 0.98  # server decode tok/s over direct
GOAL_TTFT_MS = 20.0  # server TTFT minus direct TTFT
# Forward work still lazy after a reply, beyond the one step generate_step
# runs ahead, means the forced logits cut the model out of the graph.
LAZY_MS, LAZY_TOKENS = 5.0, 3


@dataclass
class Sample:
    ttft_s: float
    decode_tps: float
    tokens: int
    deferred_s: float = 0.0  # direct only: forward work still lazy after the reply


def _decode_tps(tokens: int, first: float, last: float) -> float:
    """Tokens after the first over the time from the first to the last."""
    return (tokens - 1) / (last - first) if last > first else float("nan")


class Direct:
    """mlx-lm's own loop in this process: stream_generate, greedy, with the
    server's forced-reply logits processor."""

    def __init__(self, model_dir: Path, kv_bits: int | None, kv_group_size: int, kv_start: int):
        self.model, self.tokenizer = load(str(model_dir))
        self.kw = dict(
            kv_bits=kv_bits,
            kv_group_size=kv_group_size,
            quantized_kv_start=kv_start,
            prefill_step_size=2048,
        )

    def run(self, messages: list[dict], script: str) -> Sample:
        tok = self.tokenizer
        cache = make_prompt_cache(self.model)
        start = time.perf_counter()
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        forced = _ScriptProcessor(tok.encode(script, add_special_tokens=False), tok.eos_token_id)
        times = [
            time.perf_counter()
            for _ in stream_generate(
                self.model,
                tok,
                prompt,
                max_tokens=len(script) + 16,
                prompt_cache=cache,
                sampler=make_sampler(temp=0.0),
                logits_processors=[forced],
                **self.kw,
            )
        ]
        # A forced reply whose logits do not depend on the model's lets mlx
        # skip the forward pass until the cache is read: time what is left.
        t = time.perf_counter()
        mx.eval([c.state for c in cache])
        return Sample(
            times[0] - start,
            _decode_tps(len(times), times[0], times[-1]),
            len(times),
            time.perf_counter() - t,
        )


class Server(LiveServer):
    """./start-server.sh on a free port in a throwaway home, test hooks on."""

    def __init__(self, model_dir: Path, home: Path, flags: list[str]):
        super().__init__(str(model_dir), home, flags, "bench-server.out")

    def run(self, messages: list[dict], script: str) -> Sample:
        body = {
            "model": "mlx-local",
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": len(script) + 16,
            "x_mns_script": script,
        }
        s = self.stream_chat(body)
        return Sample(s.ttft, s.decode_tps, s.tokens)


def messages(round_no: int, prompt_words: int) -> list[dict]:
    words = (f"Round {round_no}. " + FILLER * 20).split()[:prompt_words]
    return [{"role": "user", "content": " ".join(words)}]


def bench(model_dir: Path, label: str, args) -> dict:
    """Warm-up, then `args.rounds` alternating rounds; the medians."""
    head_dim = _head_dim(model_dir)
    bits = args.kv_bits or None
    if bits and not kv_quantization_works(bits, args.kv_group_size, head_dim):
        print(
            f"  [{label}] KV quantization fails on {mx.default_device()}: direct uses "
            "full-precision KV, as the server's fallback does"
        )
        bits = None
    direct = Direct(model_dir, bits, args.kv_group_size, args.quantized_kv_start)
    script = forced_reply(direct.tokenizer, args.tokens)
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    server = Server(model_dir, home, server_flags(args))
    samples = {"direct": [], "server": []}
    try:
        direct.run(messages(-1, args.prompt_words), script)  # warm-ups: compile, caches
        server.run(messages(-2, args.prompt_words), script)
        for r in range(args.rounds):
            order = ("direct", "server") if r % 2 == 0 else ("server", "direct")
            for side in order:
                runner = direct if side == "direct" else server
                samples[side].append(runner.run(messages(r, args.prompt_words), script))
            d, s = samples["direct"][-1], samples["server"][-1]
            print(
                f"  [{label}] round {r + 1}: direct {d.decode_tps:7.1f} tok/s "
                f"ttft {d.ttft_s * 1e3:6.1f} ms | server {s.decode_tps:7.1f} tok/s "
                f"ttft {s.ttft_s * 1e3:6.1f} ms ({s.tokens} tokens)",
                flush=True,
            )
        fell_back = "cannot quantize the KV cache" in server.output() + _app_log(home)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    med = {
        side: (
            statistics.median(x.decode_tps for x in v),
            statistics.median(x.ttft_s for x in v) * 1e3,
        )
        for side, v in samples.items()
    }
    deferred_ms = statistics.median(x.deferred_s for x in samples["direct"]) * 1e3
    return {
        "label": label,
        "tokens": samples["server"][0].tokens,
        "med": med,
        "deferred_ms": deferred_ms,
        "kv": f"{args.kv_bits} bits from {args.quantized_kv_start}" if args.kv_bits else "off",
        "effective_kv": bits,
        "fell_back": fell_back,
    }


def server_flags(args) -> list[str]:
    """The KV settings, the prompt cache off unless asked (direct has none),
    then --server-arg."""
    flags = [
        "--kv-bits",
        str(args.kv_bits),
        "--kv-group-size",
        str(args.kv_group_size),
        "--quantized-kv-start",
        str(args.quantized_kv_start),
    ]
    if not args.prompt_cache:
        flags += ["--prompt-cache-size", "0"]
        if "prompt_cache_disk" in config.KEYS_BY_NAME:  # its disk tier would reload evictions
            flags += ["--prompt-cache-disk", "false"]
    return flags + [a for arg in args.server_arg for a in arg.split()]


def _app_log(home: Path) -> str:
    path = home / "logs" / "app.log"
    return path.read_text(errors="replace") if path.exists() else ""


def print_table(results: list[dict]) -> None:
    print(f"\n{mx.default_device()}, medians:")
    head = (
        f"{'model':<28} {'kv (server flag)':<28} {'tokens':>6} {'direct tok/s':>12} "
        f"{'server tok/s':>12} {'ratio':>6} {'direct TTFT':>11} {'server TTFT':>11} "
        f"{'overhead':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        (dt, dl), (st, sl) = r["med"]["direct"], r["med"]["server"]
        ratio, over = st / dt, sl - dl
        kv = r["kv"] + (" (fallback)" if r["fell_back"] else "")
        print(
            f"{r['label']:<28} {kv:<28} {r['tokens']:>6} {dt:>12.1f} {st:>12.1f} "
            f"{ratio:>6.3f} {dl:>8.1f} ms {sl:>8.1f} ms {over:>+6.1f} ms  "
            f"[ratio {'ok' if ratio >= GOAL_RATIO else 'below'} {GOAL_RATIO}, "
            f"TTFT {'ok' if over <= GOAL_TTFT_MS else 'over'} {GOAL_TTFT_MS:.0f} ms]"
        )
    lazy = [
        f"{r['label']}: {r['deferred_ms']:.0f} ms"
        for r in results
        if r["deferred_ms"] > max(LAZY_MS, LAZY_TOKENS * 1e3 / r["med"]["direct"][0])
    ]
    if lazy:
        print(
            f"\nINVALID DECODE FIGURES: after each forced reply the model's forward pass "
            f"was still unevaluated ({'; '.join(lazy)}). The test hook's forced logits do "
            "not depend on the model's, so decoding skipped the model and the next reader "
            "of the KV cache pays for it. Fix: engine/hooks.py _ScriptProcessor returns "
            "mx.depends(forced_logits, logits)."
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        type=Path,
        help="an MLX model directory (default: generated demo models, see --demo)",
    )
    p.add_argument(
        "--demo",
        help="generated models to run without --model: tiny (2 layers, "
        "64 wide), wide (4 layers, 1024 wide), comma-separated [tiny,wide on a "
        "GPU; tiny on the CPU, where wide decodes at about 15 tok/s]",
    )
    p.add_argument("--rounds", type=int, default=5, help="measured rounds [%(default)s]")
    p.add_argument("--tokens", type=int, default=400, help="forced reply length [%(default)s]")
    p.add_argument("--prompt-words", type=int, default=150, help="prompt length [%(default)s]")
    p.add_argument("--kv-bits", type=int, default=4, help="0 = full precision [%(default)s]")
    p.add_argument("--kv-group-size", type=int, default=64)
    p.add_argument("--quantized-kv-start", type=int, default=5000)
    p.add_argument(
        "--prompt-cache",
        action="store_true",
        help="leave the server's prompt cache at its configuration (by default "
        "it is off, as direct has none; README.md shows the difference)",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="FLAGS",
        help="more start-server.sh flags, e.g. --server-arg='--prefill-step-size 512'",
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        if args.model:
            models = [(args.model.resolve(), args.model.name)]
        else:
            names = args.demo or ("tiny,wide" if mx.default_device() == mx.gpu else "tiny")
            models = [demo_model(Path(tmp), n) for n in names.split(",")]
        results = [bench(path, label, args) for path, label in models]
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
