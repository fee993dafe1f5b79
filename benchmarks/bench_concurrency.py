#!/usr/bin/env python3
"""Concurrent agents against one server: aggregate decode of 1, 2 and 4
streams, two prefills arriving together, and a title request sent into a long
generation; optionally side by side with another checkout's server.

    .venv/bin/python benchmarks/bench_concurrency.py                  # demo-wide, generated
    .venv/bin/python benchmarks/bench_concurrency.py --scenario decode --demo tiny
    .venv/bin/python benchmarks/bench_concurrency.py --baseline-repo ../main-copy \\
        --baseline-venv .venv                                          # two columns

By default every reply is forced (`x_mns_script`, test hooks on), so each stream decodes
the same number of tokens. The hook forces them with a logits processor on
every row of every step, which requests from agents do not carry; with
`--replies free` a request carries none, asks for the same number of tokens
(`max_tokens`) and greedy decoding picks them (a model of random weights
seldom stops early; the figures count the tokens each reply had). Every
prompt opens with a fresh tag, so no prompt cache serves it
(--no-prompt-cache also turns the cache off). With
--baseline-repo the two servers run at once, idle but for the one measured,
and the side measured first switches each round, so drift in machine load
hits both alike. Figures are printed, never judged: benchmarks/README.md
("Concurrent agents") explains them and names the goals.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlx_lm.utils import load_tokenizer  # noqa: E402

from _bench_local import load_bench_local  # noqa: E402
from _concurrency_report import STREAMS, print_report  # noqa: E402
from _demo import FILLER, forced_reply, model_or_demo, same_blas_as_the_server  # noqa: E402
from live_server import LiveServer, Stream, venv_problem  # noqa: E402

SCENARIOS = ("decode", "prefill", "side")
SHORT_PROMPT = 40  # tokens of a decode-scenario prompt: decode, not prefill, is measured
TITLE_SYSTEM = "You write a short title (at most 8 words) for the conversation that follows."
TITLE_TASK = "Find why the config loader ignores the environment variable and fix it."
TITLE_REPLY = "x</think>Config loader ignores the environment"


class Side:
    """One server under test, its label, and the tokenizer that sizes prompts."""

    def __init__(self, label: str, server: LiveServer, tokenizer, forced: bool = True):
        self.label, self.server, self.tok, self.forced = label, server, tokenizer, forced

    def chat(self, messages: list[dict], script: str, on_first=None) -> Stream:
        """One streamed request whose reply is forced to spell `script`, or
        (not `forced`) left free for as many tokens as `script` has."""
        n = len(self.tok.encode(script, add_special_tokens=False))
        body = {"model": "mlx-local", "messages": messages, "temperature": 0.0, "max_tokens": n}
        if self.forced:
            body.update(max_tokens=n + 16, x_mns_script=script)
        return self.server.stream_chat(body, on_first)


def prompt(tok, seed: str, n_tokens: int) -> list[dict]:
    """One user message of about n_tokens tokens: a fresh tag (no prompt-cache
    hit), then filler words drawn by `seed` (equal lengths on both sides)."""
    rng, words = random.Random(seed), FILLER.split()
    text = f"Tag {uuid.uuid4().hex}."
    while len(tok.encode(text, add_special_tokens=False)) < n_tokens:
        text += " " + " ".join(rng.choice(words) for _ in range(40))
    return [{"role": "user", "content": text}]


def together(side: Side, requests: list[tuple[list[dict], str]]) -> list[Stream]:
    """The requests sent at once (a barrier releases their threads together)."""
    gate = threading.Barrier(len(requests))

    def one(req: tuple[list[dict], str]) -> Stream:
        gate.wait()
        return side.chat(*req)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def aggregate_tps(streams: list[Stream]) -> float:
    """Tokens after each stream's first, over the time when any stream was
    decoding (the union of first-to-last token spans): a server that decodes
    them one after another scores as one stream alone, whatever its prefills
    between them cost (the slowest TTFT shows that)."""
    busy = load_bench_local().busy_seconds([(s.first, s.last) for s in streams])
    return sum(s.tokens - 1 for s in streams) / busy if busy > 0 else float("nan")


def together_tps(streams: list[Stream]) -> float:
    """Tokens per second while every stream was decoding: from the last
    first token to the first last one, when no prompt is left to prefill
    (the batch's own speed); nan if they never all decoded at once."""
    start, end = max(s.first for s in streams), min(s.last for s in streams)
    if end <= start:
        return float("nan")
    return sum(s.tokens_between(start, end) for s in streams) / (end - start)


def engine_tps(before: dict, after: dict) -> float:
    """The engine's own decode speed between two /status readings: tokens
    its decode steps handed out over the seconds they took (nan for a
    server that does not count them)."""
    b, a = before.get("batching") or {}, after.get("batching") or {}
    if "decode_seconds" not in a or "decode_seconds" not in b:
        return float("nan")
    seconds = a["decode_seconds"] - b["decode_seconds"]
    return (a["decoded_tokens"] - b["decoded_tokens"]) / seconds if seconds > 0 else float("nan")


def run_decode(side: Side, r: int, args) -> dict:
    """1, 2 and 4 streams of short prompts, each replying --tokens tokens."""
    script = forced_reply(side.tok, args.tokens)
    out = {}
    for n in STREAMS:
        reqs = [(prompt(side.tok, f"d{r}.{n}.{i}", SHORT_PROMPT), script) for i in range(n)]
        before = side.server.status()
        streams = together(side, reqs)
        out[f"engine_tps_{n}"] = engine_tps(before, side.server.status())
        out[f"agg_tps_{n}"] = aggregate_tps(streams)
        out[f"all_tps_{n}"] = together_tps(streams)
        out[f"stream_tps_{n}"] = [s.decode_tps for s in streams]
        out[f"ttft_max_{n}"] = max(s.ttft for s in streams)
        out[f"streams_{n}"] = [
            {k: v for k, v in dataclasses.asdict(s).items() if k != "deltas"} for s in streams
        ]
        out["tokens"] = streams[0].tokens
        short = [s.tokens for s in streams if s.tokens < args.tokens]
        if short and not side.forced:
            print(
                f"  [{side.label}] {n} streams: free replies of {short} tokens (not {args.tokens})"
            )
    return out


def run_prefill(side: Side, r: int, args) -> dict:
    """Two prompts alone, then two others (same lengths) together; the order
    of the two parts switches each round."""
    script = "x</think>ok"

    def pair() -> list[tuple[list[dict], str]]:
        return [(prompt(side.tok, f"p{r}.{i}", args.prefill_tokens), script) for i in (0, 1)]

    parts = ["solo", "together"] if r % 2 == 0 else ["together", "solo"]
    out = {}
    for part in parts:
        if part == "solo":
            solo = [side.chat(*req) for req in pair()]
            out["solo_ttft"] = [s.ttft for s in solo]
            out["prompt_tokens"] = solo[0].prompt_tokens
        else:
            both = together(side, pair())
            out["together_ttft"] = [s.ttft for s in both]
            out["together_total"] = max(s.first for s in both) - min(s.sent for s in both)
    out["total_over_solo_sum"] = out["together_total"] / sum(out["solo_ttft"])
    return out


def run_side(side: Side, r: int, args) -> dict:
    """A title request alone, then one sent `args.side_delay` s after a long
    generation's first token."""
    title = [
        {"role": "system", "content": TITLE_SYSTEM},
        {"role": "user", "content": f"Tag {uuid.uuid4().hex}. {TITLE_TASK}"},
    ]
    solo = side.chat(title, TITLE_REPLY)
    started = threading.Event()
    long_req = (prompt(side.tok, f"s{r}", SHORT_PROMPT), forced_reply(side.tok, args.long_tokens))
    with ThreadPoolExecutor(1) as pool:
        long_future = pool.submit(side.chat, *long_req, started.set)
        while not started.wait(1.0):
            if long_future.done():  # it failed before its first token: raise its error
                long_future.result()
        time.sleep(args.side_delay)
        title[1] = {"role": "user", "content": f"Tag {uuid.uuid4().hex}. {TITLE_TASK}"}
        during = side.chat(title, TITLE_REPLY)
        long = long_future.result()
    return {
        "solo_ttft": solo.ttft,
        "during_ttft": during.ttft,
        "difference": during.ttft - solo.ttft,
        "long_still_running": long.last > during.sent,
    }


RUNNERS = {"decode": run_decode, "prefill": run_prefill, "side": run_side}


# ---- servers and command line ---------------------------------------------------


def server_flags(args) -> list[str]:
    """The KV settings, the prompt cache off with --no-prompt-cache, then --server-arg."""
    flags = ["--kv-bits", str(args.kv_bits), "--quantized-kv-start", str(args.quantized_kv_start)]
    if args.no_prompt_cache:
        flags += ["--prompt-cache-size", "0", "--prompt-cache-disk", "false"]
    return flags + [a for arg in args.server_arg for a in arg.split()]


def start_sides(model: Path, args, homes: list[Path], sides: list[Side]) -> None:
    """Start this checkout's server, and the baseline's with --baseline-repo,
    each warmed up, into `sides` (their homes into `homes`, for cleaning up)."""
    specs = [("current", None, None)]
    if args.baseline_repo:
        problem = venv_problem(args.baseline_repo, args.baseline_venv)
        if problem:
            sys.exit(f"error: {problem}")
        specs.append(("baseline", args.baseline_repo, args.baseline_venv))
    tok = load_tokenizer(model)
    for label, repo, venv in specs:
        homes.append(Path(tempfile.mkdtemp(prefix=f"bench-{label}-")))
        server = LiveServer(str(model), homes[-1], server_flags(args), f"{label}.out", repo, venv)
        sides.append(Side(label, server, tok, forced=args.replies == "forced"))
        sides[-1].chat(prompt(tok, "warm-up", SHORT_PROMPT), "x</think>warm")


def measure(sides: list[Side], args) -> dict:
    """Every scenario, round by round; the side that goes first switches each round."""
    results = {side.label: {s: [] for s in args.scenarios} for side in sides}
    for scenario in args.scenarios:
        for r in range(args.rounds):
            for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
                got = RUNNERS[scenario](side, r, args)
                results[side.label][scenario].append(got)
                shown = {k: round(v, 3) for k, v in got.items() if isinstance(v, float)}
                print(f"  [{side.label}] {scenario} round {r + 1}: {shown}", flush=True)
    return results


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--model", type=Path, help="an MLX model directory (default: a generated demo model)")
    add("--demo", choices=["tiny", "wide"], default="wide", help="without --model [%(default)s]")
    add("--scenario", action="append", choices=SCENARIOS, help="repeatable [all]")
    add("--rounds", type=int, default=3, help="measured rounds per scenario [%(default)s]")
    add("--tokens", type=int, default=64, help="tokens per decode stream [%(default)s]")
    add(
        "--replies",
        choices=["forced", "free"],
        default="forced",
        help="forced by the test hook's logits processor, or free (none) [%(default)s]",
    )
    add("--prefill-tokens", type=int, default=1500, help="prefill prompt size [%(default)s]")
    add("--long-tokens", type=int, default=256, help="the side scenario's long reply [%(default)s]")
    add("--side-delay", type=float, default=1.0, help="s after its first token [%(default)s]")
    add("--kv-bits", type=int, default=4, help="0 = full precision [%(default)s]")
    add("--quantized-kv-start", type=int, default=0, help="[%(default)s]")
    add("--no-prompt-cache", action="store_true", help="turn the servers' prompt cache off")
    add("--server-arg", action="append", default=[], metavar="FLAGS", help="more server flags")
    add("--baseline-repo", type=Path, help="another checkout, measured side by side")
    add("--baseline-venv", type=Path, help="its venv (MLX_NATIVE_SERVER_VENV) [its .venv]")
    add("--json", type=Path, metavar="PATH", help="write every round's figures to PATH")
    args = p.parse_args(argv)
    args.scenarios = args.scenario or list(SCENARIOS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    homes: list[Path] = []
    sides: list[Side] = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        model, label = model_or_demo(args.model, Path(tmp), args.demo)
        print(f"{label}, kv_bits {args.kv_bits} from {args.quantized_kv_start}", flush=True)
        try:
            start_sides(model, args, homes, sides)
            results = measure(sides, args)
        finally:
            for side in sides:
                side.server.stop()
            for home in homes:
                shutil.rmtree(home, ignore_errors=True)
    print_report(results, args)
    if args.json:
        args.json.write_text(json.dumps({"model": label, **results}, indent=1))
    return 0


if __name__ == "__main__":
    same_blas_as_the_server()
    sys.exit(main())
