#!/usr/bin/env python3
"""The prompt-cache figures of issue 6, measured on real servers.

    .venv/bin/python benchmarks/cache_bench.py                 # P1 P2 P3 P5 on the demo model
    .venv/bin/python benchmarks/cache_bench.py --only P3 --model local-models/X

P1  agent replay (bench-local.py --scenario agent): warm TTFT / cold TTFT, cached share
P2  the same with --side-requests (a title request before every turn)
P3  the server is stopped and started between turns: resumed TTFT / warm TTFT,
    and the disk load time against the cold prefill it replaces
P5  a 50-turn session, KV at 4 bits, a small memory budget: RSS and cache bytes per turn
floor  mlx-lm alone, no server: a turn's new tokens on a cached prefix against cold,
    the best warm/cold ratio any cache reaches with this model and turn shape

Each scenario starts ./start-server.sh in a throwaway home (so the disk tier
starts empty), on the generated demo model unless --model is given. P1 and
P2 run bench-local.py as a user would; P3 and P5 drive its agent replay turn
by turn (they act between turns). Not a test: CACHE.md reports the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _bench_local import load_bench_local

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
START_TIMEOUT = 300  # seconds for ./start-server.sh to print "ready:"


BL = load_bench_local()
sys.path.insert(0, str(REPO))


class Server:
    """./start-server.sh in `home` on `port`; restartable with the same home."""

    def __init__(self, model: Path, home: Path, flags: list[str]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.model, self.home, self.flags = model, home, flags
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_NATIVE_SERVER_")}
        self.env.update(MLX_NATIVE_SERVER_HOME=str(home), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        self.proc = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        """The serving process (the start script may sit above it)."""
        return int((self.home / "run" / f"server-{self.port}.pid").read_text())

    def start(self) -> Server:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [
            str(REPO / "start-server.sh"),
            "--model",
            str(self.model),
            "--port",
            str(self.port),
            *self.flags,
        ]
        out = (self.home / "server.out").open("a")
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            cwd=self.home,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if BL.requests.get(self.base_url[:-3] + "/health", timeout=2).status_code == 200:
                    return self
            except BL.requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"error: the server did not start; see {self.home / 'server.out'}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(120)

    def status(self) -> dict:
        return BL.requests.get(self.base_url[:-3] + "/status", timeout=10).json()["prompt_cache"]


# ---- scenarios --------------------------------------------------------------


def bench_local(server: Server, args, extra: list[str]) -> dict:
    """Run bench-local.py's agent scenario against `server`; its JSON report."""
    out = server.home / "bench.json"
    argv = [
        PYTHON,
        str(REPO / "bench-local.py"),
        "--base-url",
        server.base_url,
        "--scenario",
        "agent",
        "--turns",
        str(args.turns),
        "--system-tokens",
        str(args.system_tokens),
        "--server-pid",
        str(server.pid),
        "--json",
        str(out),
        *extra,
    ]
    subprocess.run(argv, check=True, stdout=sys.stderr)
    return json.loads(out.read_text())


def p1_p2(model: Path, root: Path, args, side: bool) -> dict:
    server = Server(model, root / ("p2" if side else "p1"), []).start()
    try:
        report = bench_local(server, args, ["--side-requests"] if side else [])
    finally:
        server.stop()
    s = report["summary"]
    return {
        "cold_ttft_s": s["cold_ttft_s"],
        "warm_ttft_s": s["warm_ttft_s"],
        "warm_over_cold": s["warm_ttft_s"] / s["cold_ttft_s"],
        "warm_cache_share": s["warm_cache_share"],
        "prompt_tokens": [t["prompt_tokens"] for t in report["turns"]],
    }


class Session:
    """bench-local.py's agent session, one turn at a time."""

    def __init__(self, system_tokens: int, seed: int = 0):
        self.rng = random.Random(seed)
        system = f"{BL.SYSTEM_PREAMBLE} Session {uuid.uuid4().hex[:8]}.\n\n" + BL.synthetic_text(
            system_tokens, self.rng
        )
        self.messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": BL.TASK},
        ]
        self.tools = BL.agent_tools()
        self.turn = 0

    def step(self, server: Server):
        self.turn += 1
        client = BL.Client(BL.Settings(base_url=server.base_url, max_tokens=64))
        sample = client.chat("mlx-local", self.messages, self.tools)
        self.messages += BL.follow_up(sample, self.turn, self.rng)
        return sample


def p3(model: Path, root: Path, args) -> dict:
    """Restart before every odd turn after the first: cold, warm, resumed, warm, ..."""
    server = Server(model, root / "p3", []).start()
    session, rows = Session(args.system_tokens), []
    try:
        for turn in range(1, args.turns + 1):
            resumed = turn > 1 and turn % 2 == 1
            if resumed:
                server.stop()
                server.start()
            sample = session.step(server)
            kind = "cold" if turn == 1 else "resumed" if resumed else "warm"
            stats = server.status()
            rows.append(
                {
                    "turn": turn,
                    "kind": kind,
                    "ttft_s": sample.ttft_s,
                    "prompt": sample.prompt_tokens,
                    "cached": sample.cached_tokens,
                    "disk_load_s": stats["disk"]["load_seconds"] if resumed else None,
                }
            )
            log(
                f"P3 turn {turn} ({kind}): TTFT {sample.ttft_s:.3f} s, "
                f"{sample.cached_tokens}/{sample.prompt_tokens} cached"
            )
    finally:
        server.stop()
    warm = statistics.median(r["ttft_s"] for r in rows if r["kind"] == "warm")
    resumed = [r for r in rows if r["kind"] == "resumed"]
    return {
        "turns": rows,
        "warm_ttft_s": warm,
        "resumed_ttft_s": [r["ttft_s"] for r in resumed],
        "worst_resumed_over_warm": max(r["ttft_s"] for r in resumed) / warm,
        "cold_ttft_s": rows[0]["ttft_s"],
        "disk_load_s": [r["disk_load_s"] for r in resumed],
    }


def p5(model: Path, root: Path, args) -> dict:
    """A long session under a small memory budget: RSS and cache bytes per turn."""
    flags = ["--kv-bits", "4", "--prompt-cache-bytes", args.p5_budget]
    server = Server(model, root / "p5", flags).start()
    BL.TOOL_RESULT_TOKENS = args.p5_tool_tokens  # keeps 50 turns of CPU attention affordable
    session, rows = Session(args.system_tokens), []
    try:
        for _ in range(args.p5_turns):
            sample = session.step(server)
            stats = server.status()
            rss = BL.server_rss_mb(server.pid)
            rows.append(
                {
                    "turn": session.turn,
                    "ttft_s": sample.ttft_s,
                    "prompt": sample.prompt_tokens,
                    "cached": sample.cached_tokens,
                    "rss_mb": rss,
                    "cache_mb": stats["bytes"] / 2**20,
                    "entries": stats["entries"],
                }
            )
            log(
                f"P5 turn {session.turn}: prompt {sample.prompt_tokens}, cached "
                f"{sample.cached_tokens}, TTFT {sample.ttft_s:.3f} s, RSS {rss:.0f} MB, "
                f"cache {stats['bytes'] / 2**20:.1f} MB in {stats['entries']} entries"
            )
        budget = server.status()["max_bytes"]
    finally:
        server.stop()
    return {
        "turns": rows,
        "budget_mb": budget / 2**20,
        "max_cache_mb": max(r["cache_mb"] for r in rows),
        "rss_first_mb": rows[0]["rss_mb"],
        "rss_max_mb": max(r["rss_mb"] for r in rows),
        "rss_last_mb": rows[-1]["rss_mb"],
    }


def floor(model: Path, args) -> dict:
    """mlx-lm alone, no server: TTFT of a turn-2 prompt cold, and with turn 1's
    KV state given, which is the best any prompt cache can do."""
    from mlx_lm import load, stream_generate
    from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

    from mlx_native_server.cache.policy import common_prefix

    m, tok = load(str(model))
    session = Session(args.system_tokens)
    first = tok.apply_chat_template(
        session.messages, tools=session.tools, add_generation_prompt=True
    )
    session.messages += [
        {"role": "assistant", "content": "Reading the file."},
        {"role": "user", "content": BL.synthetic_text(BL.TOOL_RESULT_TOKENS, session.rng)},
    ]
    second = tok.apply_chat_template(
        session.messages, tools=session.tools, add_generation_prompt=True
    )
    n = common_prefix(first, second)
    kv = {"kv_bits": 4, "kv_group_size": 64, "quantized_kv_start": 5000}

    def ttft(prompt, cache) -> float:
        start = time.perf_counter()
        next(stream_generate(m, tok, prompt, max_tokens=1, prompt_cache=cache, **kv))
        return time.perf_counter() - start

    cold = ttft(second, make_prompt_cache(m))
    cache = make_prompt_cache(m)
    ttft(second[:n], cache)
    trim_prompt_cache(cache, cache[0].offset - n)
    warm = ttft(second[n:], cache)
    log(
        f"floor: {len(second)} tokens cold {cold:.3f} s; {len(second) - n} new tokens "
        f"on {n} cached {warm:.3f} s"
    )
    return {
        "prompt_tokens": len(second),
        "new_tokens": len(second) - n,
        "cold_ttft_s": cold,
        "warm_ttft_s": warm,
        "warm_over_cold": warm / cold,
    }


# ---- output -----------------------------------------------------------------


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def summary(results: dict) -> str:
    out = []
    for name in ("P1", "P2"):
        if name in results:
            r = results[name]
            out.append(
                f"{name}: cold {r['cold_ttft_s']:.3f} s, warm {r['warm_ttft_s']:.3f} s, "
                f"warm/cold {r['warm_over_cold']:.3f} (goal <= 0.05), cached share "
                f"{r['warm_cache_share']:.1%} (goal >= 95 %)"
            )
    if "P3" in results:
        r = results["P3"]
        out.append(
            f"P3: warm {r['warm_ttft_s']:.3f} s, resumed "
            f"{', '.join(f'{t:.3f}' for t in r['resumed_ttft_s'])} s, worst resumed/warm "
            f"{r['worst_resumed_over_warm']:.2f} (goal <= 2); disk loads "
            f"{', '.join(f'{t:.3f}' for t in r['disk_load_s'])} s against a cold "
            f"prefill of {r['cold_ttft_s']:.3f} s"
        )
    if "P5" in results:
        r = results["P5"]
        out.append(
            f"P5: {len(r['turns'])} turns, cache at most {r['max_cache_mb']:.1f} MB of a "
            f"{r['budget_mb']:.0f} MB budget; RSS {r['rss_first_mb']:.0f} MB after turn 1, "
            f"max {r['rss_max_mb']:.0f} MB, last {r['rss_last_mb']:.0f} MB"
        )
    if "floor" in results:
        r = results["floor"]
        out.append(
            f"floor (mlx-lm alone): {r['new_tokens']} new tokens on a {r['prompt_tokens']}-"
            f"token prompt: {r['warm_ttft_s']:.3f} s against {r['cold_ttft_s']:.3f} s cold, "
            f"{r['warm_over_cold']:.3f}"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model directory (default: the generated demo model)")
    p.add_argument("--only", default="P1,P2,P3,P5,floor", help="comma-separated scenarios")
    p.add_argument("--turns", type=int, default=8)
    # bench-local.py counts 4 characters a token; the demo tokenizer (970 base
    # tokens) makes about 2, so 4000 gives the ~8K-token prompt of the issue.
    p.add_argument("--system-tokens", type=int, default=4000)
    p.add_argument("--p5-turns", type=int, default=50)
    p.add_argument(
        "--p5-tool-tokens",
        type=int,
        default=100,
        help="tool result per P5 turn (bench-local.py appends 300)",
    )
    p.add_argument("--p5-budget", default="16MiB", help="prompt_cache_bytes for P5")
    p.add_argument("--json", help="write every figure to this file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        root = Path(tmp)
        if args.model:
            model = Path(args.model).resolve()
        else:
            from mlx_native_server.models import demo as demo_model

            model = demo_model.generate(root / "demo", progress=lambda *a, **k: None)
        runs = {
            "P1": lambda: p1_p2(model, root, args, side=False),
            "P2": lambda: p1_p2(model, root, args, side=True),
            "P3": lambda: p3(model, root, args),
            "P5": lambda: p5(model, root, args),
            "floor": lambda: floor(model, args),
        }
        results = {name: runs[name]() for name in args.only.split(",")}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
