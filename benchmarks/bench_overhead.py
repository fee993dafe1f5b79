#!/usr/bin/env python3
"""What the server costs over mlx-lm itself: decode tok/s and time to first
token of the server against `mlx_lm.stream_generate` on the same model,
prompt, forced reply, greedy sampler and KV settings, in one run; optionally
another checkout's server beside it.

    .venv/bin/python benchmarks/bench_overhead.py               # demo model(s), generated
    .venv/bin/python benchmarks/bench_overhead.py --model PATH  # a real model
    .venv/bin/python benchmarks/bench_overhead.py --baseline-repo ../main-copy \\
        --baseline-venv .venv --json overhead.json              # three sides, figures to a file

The sides (direct, this server, and with --baseline-repo the baseline's)
take turns round by round after one warm-up each, the side that goes first
rotating each round, so drift in machine load hits all alike; the table shows
medians, each server's beside direct. Both servers run at once, idle but for
the one measured. A server is started by its checkout's ./start-server.sh on
a free port with test hooks on, so the reply is forced (`x_mns_script`) and
every side decodes exactly the same tokens. Each round uses a new prompt and
the servers' prompt cache is off (direct has none) unless --prompt-cache.
--json writes the medians per side and every round's samples. The goals
(ratio, TTFT overhead) judge this server; benchmarks/README.md explains the
figures.
"""

from __future__ import annotations

import argparse
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

from _demo import FILLER, demo_model, forced_reply, same_blas_as_the_server  # noqa: E402
from _overhead_report import SERVERS, print_table, write_json  # noqa: E402
from live_server import LiveServer, venv_problem  # noqa: E402
from mlx_native_server.adapter.kv import kv_quantization_works  # noqa: E402
from mlx_native_server.core import config  # noqa: E402
from mlx_native_server.engine.engine import _head_dim  # noqa: E402
from mlx_native_server.engine.hooks import _ScriptProcessor  # noqa: E402

SIDES = ("direct", *SERVERS)  # the table's and the round lines' order


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
    """A checkout's ./start-server.sh (`repo`, default this one) on a free port
    in its own scratch home, test hooks on."""

    def __init__(
        self,
        model_dir: Path,
        home: Path,
        flags: list[str],
        side: str,
        repo: Path | None,
        venv: Path | None,
    ):
        super().__init__(str(model_dir), home, flags, f"bench-{side}.out", repo, venv)

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

    def fell_back(self) -> bool:
        """Whether it served full-precision KV because quantized KV fails here."""
        log = self.home / "logs" / "app.log"
        app_log = log.read_text(errors="replace") if log.exists() else ""
        return "cannot quantize the KV cache" in self.output() + app_log


def messages(round_no: int, prompt_words: int) -> list[dict]:
    words = (f"Round {round_no}. " + FILLER * 20).split()[:prompt_words]
    return [{"role": "user", "content": " ".join(words)}]


def direct_kv_bits(model_dir: Path, label: str, args) -> int | None:
    """--kv-bits for direct, or None where this backend cannot quantize the KV
    cache (the server then falls back to full precision too)."""
    bits = args.kv_bits or None
    if bits and not kv_quantization_works(bits, args.kv_group_size, _head_dim(model_dir)):
        print(
            f"  [{label}] KV quantization fails on {mx.default_device()}: direct uses "
            "full-precision KV, as the server's fallback does"
        )
        return None
    return bits


def start_servers(model_dir: Path, homes: Path, args, servers: dict[str, Server]) -> None:
    """This checkout's server and, with --baseline-repo, the baseline's, each in
    a home under `homes`, into `servers` (filled as they start, for stopping)."""
    specs = [("server", None, None)]
    if args.baseline_repo:
        specs.append(("baseline", args.baseline_repo, args.baseline_venv))
    for side, repo, venv in specs:
        home = homes / side
        home.mkdir()
        servers[side] = Server(model_dir, home, server_flags(args), side, repo, venv)


def measure(runners: dict, script: str, label: str, args) -> list[dict]:
    """One warm-up per side, then `args.rounds` rounds; the side that goes first
    rotates each round, so drift in machine load hits all alike. Each round is
    its order and a Sample per side."""
    sides = list(runners)
    for i, side in enumerate(sides):  # warm-ups: compile, caches
        runners[side].run(messages(-1 - i, args.prompt_words), script)
    rounds = []
    for r in range(args.rounds):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        got = {side: runners[side].run(messages(r, args.prompt_words), script) for side in order}
        rounds.append({"order": order, **got})
        print(round_line(label, r, got), flush=True)
    return rounds


def round_line(label: str, r: int, got: dict[str, Sample]) -> str:
    d = got["direct"]
    parts = [f"direct {d.decode_tps:7.1f} tok/s ttft {d.ttft_s * 1e3:6.1f} ms"]
    parts += [
        f"{side} {s.decode_tps:7.1f} tok/s ttft {s.ttft_s * 1e3:6.1f} ms ({s.tokens} tokens)"
        for side in SERVERS
        if (s := got.get(side))
    ]
    return f"  [{label}] round {r + 1}: " + " | ".join(parts)


def bench(model_dir: Path, label: str, args) -> dict:
    """Direct, this server and, with --baseline-repo, the baseline server (both
    servers up at once, idle but for the one measured): warm-ups, then
    `args.rounds` rounds; the medians and every round."""
    bits = direct_kv_bits(model_dir, label, args)
    direct = Direct(model_dir, bits, args.kv_group_size, args.quantized_kv_start)
    script = forced_reply(direct.tokenizer, args.tokens)
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="bench-home-") as homes:
        try:
            start_servers(model_dir, Path(homes), args, servers)
            rounds = measure({"direct": direct, **servers}, script, label, args)
            fell_back = {side: server.fell_back() for side, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
    med = {
        side: (
            statistics.median(rd[side].decode_tps for rd in rounds),
            statistics.median(rd[side].ttft_s for rd in rounds) * 1e3,
        )
        for side in SIDES
        if side in rounds[0]
    }
    return {
        "label": label,
        "tokens": rounds[0]["server"].tokens,
        "med": med,
        "deferred_ms": statistics.median(rd["direct"].deferred_s for rd in rounds) * 1e3,
        "kv": f"{args.kv_bits} bits from {args.quantized_kv_start}" if args.kv_bits else "off",
        "effective_kv": bits,
        "fell_back": fell_back,
        "rounds": rounds,
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


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add(
        "--model",
        type=Path,
        help="an MLX model directory (default: generated demo models, see --demo)",
    )
    add(
        "--demo",
        help="generated models to run without --model: tiny (2 layers, "
        "64 wide), wide (4 layers, 1024 wide), comma-separated [tiny,wide on a "
        "GPU; tiny on the CPU, where wide decodes at about 15 tok/s]",
    )
    add("--rounds", type=int, default=5, help="measured rounds [%(default)s]")
    add("--tokens", type=int, default=400, help="forced reply length [%(default)s]")
    add("--prompt-words", type=int, default=150, help="prompt length [%(default)s]")
    add("--kv-bits", type=int, default=4, help="0 = full precision [%(default)s]")
    add("--kv-group-size", type=int, default=64)
    add("--quantized-kv-start", type=int, default=5000)
    add(
        "--prompt-cache",
        action="store_true",
        help="leave the server's prompt cache at its configuration (by default "
        "it is off, as direct has none; README.md shows the difference)",
    )
    add(
        "--server-arg",
        action="append",
        default=[],
        metavar="FLAGS",
        help="more start-server.sh flags, e.g. --server-arg='--prefill-step-size 512'",
    )
    add("--baseline-repo", type=Path, help="another checkout, measured side by side")
    add("--baseline-venv", type=Path, help="its venv (MLX_NATIVE_SERVER_VENV) [its .venv]")
    add("--json", type=Path, metavar="PATH", help="write the medians and every round to PATH")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_repo and (problem := venv_problem(args.baseline_repo, args.baseline_venv)):
        sys.exit(f"error: {problem}")  # before any model is built or loaded
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        if args.model:
            models = [(args.model.resolve(), args.model.name)]
        else:
            names = args.demo or ("tiny,wide" if mx.default_device() == mx.gpu else "tiny")
            models = [demo_model(Path(tmp), n) for n in names.split(",")]
        results = [bench(path, label, args) for path, label in models]
    print_table(results)
    if args.json:
        write_json(args.json, results, args)
    return 0


if __name__ == "__main__":
    same_blas_as_the_server()
    sys.exit(main())
