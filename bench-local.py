#!/usr/bin/env python3
"""Latency, throughput and prompt-cache benchmark against any running
OpenAI-compatible server: this project's or any other.

Standalone: Python 3.10+ standard library plus `requests` (python3 -m pip
install requests; in this repository's venv, the `bench` extra); it imports
nothing from the package, so the system Python runs it. BENCHMARKING.md
explains the figures and shows example output.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

try:
    import requests
except ImportError:
    sys.exit(f"error: bench-local.py needs 'requests': {sys.executable} -m pip install requests")

EXIT_OK, EXIT_SERVER, EXIT_USAGE = 0, 1, 2
CHARS_PER_TOKEN = 4  # English prose averages about 4 characters per BPE token
TOOL_RESULT_TOKENS = 300  # the synthetic tool result an agent turn appends
START_HINT = "start it with ./start-server.sh or pass --base-url"
MODEL_HINT = (
    "pass the server's /v1 address as --base-url, or name the model with "
    "--model ID (which skips the model list)"
)
NOT_FOUND_HINT = "check --base-url (the server's /v1 address) and --model"
# Delta fields that carry a generated token: MiniMax reasons before it answers.
TOKEN_KEYS = ("content", "reasoning_content", "reasoning", "tool_calls")

WORDS = (
    "the a of to and in is for that with on as be this by are from it or an at not "
    "file function request model cache token prompt server session agent tool result "
    "error value config path module test build run check return string list update "
    "read write edit search replace import export class method option default always "
    "never before after when while should must may user project change commit branch "
    "review output input format parse handle stream response client local remote "
    "memory context window limit step plan task reply answer explain concise clear "
    "exact careful existing new old first last each every only also then instead"
).split()

SYSTEM_PREAMBLE = (
    "You are an interactive coding agent working in the user's repository. "
    "Use the tools to read, search and edit files; keep answers short."
)
TASK = "Find why the config loader ignores the environment variable and fix it, with a test."
TITLE_SYSTEM = "You write a short title (at most 8 words) for the conversation that follows."

# (name, description, {parameter: JSON type}): the tools OpenCode sends, in
# short; the first parameter of each is required.
TOOL_SPECS = [
    (
        "read",
        "Read a file, optionally a range of lines.",
        {"filePath": "string", "offset": "integer", "limit": "integer"},
    ),
    ("write", "Write a file, replacing its content.", {"filePath": "string", "content": "string"}),
    (
        "edit",
        "Replace an exact string in a file.",
        {
            "filePath": "string",
            "oldString": "string",
            "newString": "string",
            "replaceAll": "boolean",
        },
    ),
    (
        "bash",
        "Run a shell command and return its output.",
        {"command": "string", "timeout": "integer", "description": "string"},
    ),
    (
        "glob",
        "Find files by a glob pattern such as src/**/*.ts.",
        {"pattern": "string", "path": "string"},
    ),
    (
        "grep",
        "Search file contents with a regular expression.",
        {"pattern": "string", "path": "string", "include": "string"},
    ),
    ("list", "List a directory, skipping ignored patterns.", {"path": "string", "ignore": "array"}),
    ("webfetch", "Fetch a URL and return it as markdown.", {"url": "string", "format": "string"}),
    ("todowrite", "Replace the session's todo list.", {"todos": "array"}),
    (
        "task",
        "Start a sub-agent for a multi-step task.",
        {"description": "string", "prompt": "string", "subagent_type": "string"},
    ),
]


class BenchError(Exception):
    """An expected failure: one sentence for the user, and the exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_SERVER):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Settings:
    base_url: str = "http://localhost:8000/v1"
    model: str | None = None
    scenario: str = "simple"
    runs: int = 3
    turns: int = 8
    max_tokens: int = 64
    prompt_tokens: int = 1000
    system_tokens: int = 8000
    side_requests: bool = False
    api_key: str | None = None
    json_path: str | None = None
    timeout: float = 600.0
    server_pid: int | None = None
    seed: int = 0
    quiet: bool = False
    concurrency: int = 1
    shared_prompt: bool = False


@dataclass
class Sample:
    """The figures of one streamed request; None where the server gave no number."""

    ttft_s: float
    total_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    cache_share: float | None = None
    rss_mb: float | None = None
    content: str = field(default="", repr=False)
    tool_calls: list = field(default_factory=list, repr=False)

    def figures(self) -> dict:
        """The JSON form: every measured field, without the generated text."""
        out = asdict(self)
        del out["content"], out["tool_calls"]
        return out


# ---- pure helpers -----------------------------------------------------------


def spread(values: Iterable[float | None]) -> dict:
    """min / median / max of the values that are not None (all None if none are)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"min": None, "median": None, "max": None}
    return {"min": min(present), "median": statistics.median(present), "max": max(present)}


def busy_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """The length of the union of (start, end) intervals: time when any was running."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def aggregate(timeline: list[tuple[float, float, int]]) -> dict:
    """Aggregate decode tok/s of concurrent requests, each (first token, end,
    completion tokens): the tokens after each first one, over the time when
    any of them was decoding; and how many requests there were."""
    busy = busy_seconds((first, end) for first, end, _ in timeline)
    tokens = sum(max(n - 1, 0) for _, _, n in timeline)
    return {"requests": len(timeline), "decode_tps": tokens / busy if busy > 0 else None}


def sse_events(lines: Iterable[str]) -> Iterator[dict]:
    """Yield the JSON `data:` payloads of a server-sent-event stream up to `data: [DONE]`.

    Blank lines, comments (`: keepalive`) and other SSE fields are skipped.
    """
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError:
            raise BenchError(f"the server streamed a non-JSON line: {data[:80]!r}") from None


def synthetic_text(tokens: int, rng: random.Random) -> str:
    """Varied English-like text of about `tokens` tokens, at CHARS_PER_TOKEN characters each.

    No tokenizer is used; the server's usage figures give the true count.
    """
    parts, size = [], 0
    while size < tokens * CHARS_PER_TOKEN:
        words = rng.choices(WORDS, k=rng.randint(6, 16))
        if rng.random() < 0.3:  # paths and numbers tokenize densely, as in real prompts
            path = f"src/{rng.choice(WORDS)}_{rng.randint(1, 99)}.py"
            words.insert(rng.randrange(len(words)), path)
        sentence = " ".join(words).capitalize() + rng.choice(".;.:.")
        parts.append(sentence + ("\n\n" if len(parts) % 6 == 5 else " "))
        size += len(sentence) + 1
    return "".join(parts).strip()


def agent_tools() -> list[dict]:
    """The ten JSON-schema function tools of the agent scenario."""

    def schema(params: dict) -> dict:
        props = {name: {"type": kind} for name, kind in params.items()}
        for prop in props.values():
            if prop["type"] == "array":
                prop["items"] = {"type": "string"}
        return {"type": "object", "properties": props, "required": [next(iter(params))]}

    return [
        {"type": "function", "function": {"name": n, "description": d, "parameters": schema(p)}}
        for n, d, p in TOOL_SPECS
    ]


def follow_up(sample: Sample, turn: int, rng: random.Random) -> list[dict]:
    """What an agent appends after a turn: the reply, then one tool result per call.

    A reply without tool calls (the random fixture model never makes one) gets a
    synthetic `read` call, so every turn appends assistant + tool like a real session.
    """
    calls = [c for c in sample.tool_calls if c["id"] and c["function"].get("name")]
    if not calls:
        args = json.dumps({"filePath": f"/repo/src/module_{turn}.py"})
        function = {"name": "read", "arguments": args}
        calls = [{"id": f"call_{turn}", "type": "function", "function": function}]
    reply = {"role": "assistant", "content": sample.content or None, "tool_calls": calls}
    return [reply] + [
        {
            "role": "tool",
            "tool_call_id": call["id"],
            "content": synthetic_text(TOOL_RESULT_TOKENS, rng),
        }
        for call in calls
    ]


def merge_tool_calls(calls: list[dict], deltas: list[dict]) -> None:
    """Fold streamed tool-call fragments (keyed by `index`) into complete calls."""
    for delta in deltas:
        i = delta.get("index", len(calls))
        while len(calls) <= i:
            calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        calls[i]["id"] = delta.get("id") or calls[i]["id"]
        for key, value in (delta.get("function") or {}).items():
            calls[i]["function"][key] = calls[i]["function"].get(key, "") + (value or "")


def measure(events: Iterable[dict], start: float) -> Sample:
    """Time a chat-completion event stream that began at perf_counter() `start`.

    The first token is the first delta carrying content, reasoning or a tool call;
    decode speed counts the tokens after it (usage's completion_tokens if given)
    over the time from it to the end of the stream.
    """
    first = None
    deltas, usage, content, calls = 0, {}, [], []
    for event in events:
        if "error" in event:
            raise BenchError(f"the server reported an error mid-stream: {message_of(event)}")
        usage = event.get("usage") or usage
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            if any(delta.get(key) for key in TOKEN_KEYS):
                first, deltas = first or time.perf_counter(), deltas + 1
            content.append(delta.get("content") or "")
            merge_tool_calls(calls, delta.get("tool_calls") or [])
    end = time.perf_counter()
    if first is None:
        raise BenchError("the server's stream ended without generating a token")
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens") or deltas
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    sample = Sample(
        first - start,
        end - start,
        prompt,
        completion,
        cached,
        reasoning,
        content="".join(content),
        tool_calls=calls,
    )
    sample.prefill_tps = prompt / sample.ttft_s if prompt else None
    # Decode runs to the stream's end, not the last delta: tokens whose text a
    # server holds back (stop strings, tool-call parsing) take decode time too.
    if completion > 1 and end > first:
        sample.decode_tps = (completion - 1) / (end - first)
    sample.cache_share = cached / prompt if prompt and cached is not None else None
    return sample


def message_of(body) -> str:
    """The message of an OpenAI error body ({"error": {"message": ...}}) or the body itself."""
    error = body.get("error", body) if isinstance(body, dict) else body
    return str(error.get("message", error) if isinstance(error, dict) else error)


# ---- I/O --------------------------------------------------------------------


def stream_lines(resp: requests.Response) -> Iterator[str]:
    """The response's lines, each as soon as it arrives.

    requests' iter_lines blocks for a full 512-byte read on un-chunked (HTTP/1.0)
    streams, which would delay the first token, so read what is available instead.
    """
    raw, buffer = resp.raw, b""
    if getattr(raw, "chunked", False) or not hasattr(raw, "read1"):
        chunks = resp.iter_content(chunk_size=None if getattr(raw, "chunked", False) else 1)
    else:
        chunks = iter(lambda: raw.read1(65536), b"")
    for chunk in chunks:
        *lines, buffer = (buffer + chunk).split(b"\n")
        yield from (line.rstrip(b"\r").decode("utf-8", "replace") for line in lines)
    yield buffer.decode("utf-8", "replace")


class Client:
    """The server's two endpoints, with every failure turned into a BenchError."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.session = requests.Session()
        # (first token, end, completion tokens) of every chat, in perf_counter time
        self.timeline: list[tuple[float, float, int]] = []
        if settings.api_key:
            self.session.headers["Authorization"] = f"Bearer {settings.api_key}"

    def _request(self, method: str, path: str, hint: str = "", **kwargs) -> requests.Response:
        """The response to one request. An error status becomes a BenchError (exit 2
        for a 404) whose message ends in `hint`, if given."""
        url, timeout = self.settings.base_url.rstrip("/") + path, self.settings.timeout
        try:
            resp = self.session.request(method, url, timeout=timeout, **kwargs)
        except requests.ConnectionError:
            raise BenchError(
                f"cannot reach the server at {url}; {START_HINT}", EXIT_USAGE
            ) from None
        except requests.Timeout:
            raise BenchError(
                f"the server at {url} did not answer within {timeout:g} s; "
                "raise --timeout for a slow first prompt"
            ) from None
        if resp.status_code >= 400:
            try:
                detail = message_of(resp.json())
            except ValueError:
                detail = resp.text.strip()[:200] or resp.reason
            message = f"the server answered {resp.status_code} to {method} {url}: {detail}"
            if resp.status_code == 404:  # a wrong address or a model it does not serve
                raise BenchError(f"{message}; {hint or NOT_FOUND_HINT}", EXIT_USAGE)
            raise BenchError(f"{message}; {hint}" if hint else message)
        return resp

    def model_ids(self) -> list[str]:
        """The ids GET /models lists; BenchError (suggesting --model) if it has no such list."""
        url = f"{self.settings.base_url.rstrip('/')}/models"
        try:
            models = self._request("GET", "/models", hint=MODEL_HINT).json()["data"]
            return [model["id"] for model in models]
        except (ValueError, KeyError, TypeError, requests.RequestException):
            raise BenchError(
                f"{url} is not an OpenAI model list; {MODEL_HINT}", EXIT_USAGE
            ) from None

    def chat(self, model: str, messages: list[dict], tools: list[dict] | None = None) -> Sample:
        """Stream one chat completion (temperature 0, seeded) and measure it."""
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": self.settings.max_tokens,
            "temperature": 0,
            "seed": self.settings.seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = tools
        start = time.perf_counter()
        with self._request("POST", "/chat/completions", json=body, stream=True) as resp:
            sample = measure(sse_events(stream_lines(resp)), start)
        self.timeline.append(
            (start + sample.ttft_s, start + sample.total_s, sample.completion_tokens or 0)
        )
        return sample


def server_rss_mb(pid: int | None) -> float | None:
    """The resident set size of process `pid` in MB, from /proc or ps; None if unreadable."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(ln.split()[1]) for ln in status if ln.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration, ValueError):
        pass
    try:  # macOS has no /proc; ps reports kilobytes there too
        ps = subprocess.run(
            ["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=5
        )
        return int(ps.stdout.strip()) / 1024
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


# ---- scenarios --------------------------------------------------------------

Progress = Callable[[str], None]


def pick_model(client: Client, settings: Settings) -> str:
    """The --model id as given, or else the first id GET /v1/models lists.

    --model never consults /v1/models: some servers' lists are broken or name
    other ids than the ones they answer to (mlx-lm's own server lists its
    Hugging Face cache and fails without one), so the chat endpoint decides.
    """
    if settings.model is not None:
        return settings.model
    ids = client.model_ids()
    if not ids:
        raise BenchError(
            f"{settings.base_url}/models lists no model; pass one with --model", EXIT_USAGE
        )
    return ids[0]


def run_simple(client: Client, model: str, settings: Settings, progress: Progress) -> dict:
    """--runs requests of one size; a fresh tag opens each prompt so no cache serves it."""
    notes = synthetic_text(settings.prompt_tokens, random.Random(settings.seed))
    runs = []
    for i in range(1, settings.runs + 1):
        prompt = f"Run {uuid.uuid4().hex[:8]}. Summarise these notes in one paragraph.\n\n{notes}"
        sample = client.chat(model, [{"role": "user", "content": prompt}])
        sample.rss_mb = server_rss_mb(settings.server_pid)
        runs.append(sample.figures())
        progress(
            f"run {i}/{settings.runs}: TTFT {fmt(sample.ttft_s, 3)} s, "
            f"decode {fmt(sample.decode_tps, 1)} tok/s, {sample.completion_tokens} tokens"
        )
    return {"runs": runs, "summary": {key: spread(r[key] for r in runs) for key, _, _ in ROWS}}


def run_agent(
    client: Client, model: str, settings: Settings, progress: Progress, tag: str | None = None
) -> dict:
    """Replay an append-only agent session; a fresh session tag (or `tag`)
    keeps turn 1 cold."""
    rng = random.Random(settings.seed)
    system = f"{SYSTEM_PREAMBLE} Session {tag or uuid.uuid4().hex[:8]}.\n\n" + synthetic_text(
        settings.system_tokens, rng
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": TASK}]
    title = [{"role": "system", "content": TITLE_SYSTEM}, {"role": "user", "content": TASK}]
    tools, turns = agent_tools(), []
    for turn in range(1, settings.turns + 1):
        side = client.chat(model, title) if settings.side_requests else None
        sample = client.chat(model, messages, tools)
        sample.rss_mb = server_rss_mb(settings.server_pid)
        turns.append({"turn": turn, **sample.figures(), "side": side and side.figures()})
        progress(
            f"turn {turn}/{settings.turns}: TTFT {fmt(sample.ttft_s, 3)} s, "
            f"{fmt(sample.cached_tokens)} of {fmt(sample.prompt_tokens)} prompt tokens cached"
        )
        messages += follow_up(sample, turn, rng)
    return {"turns": turns, "summary": agent_summary(turns)}


def run_sessions(model: str, settings: Settings, progress: Progress) -> dict:
    """--concurrency sessions of the scenario at once, one thread and client
    each. Session i uses seed + i and a session tag of its own unless
    --shared-prompt, so they share no cache entries beyond the common preamble."""
    shared_tag = uuid.uuid4().hex[:8] if settings.shared_prompt else None

    def session(i: int) -> tuple[dict, list]:
        mine = settings if settings.shared_prompt else replace(settings, seed=settings.seed + i)
        client, say = Client(mine), lambda line: progress(f"[session {i + 1}] {line}")
        if settings.scenario == "agent":
            figures = run_agent(client, model, mine, say, shared_tag)
        else:
            figures = run_simple(client, model, mine, say)
        return {"session": i + 1, "seed": mine.seed, **figures}, client.timeline

    with ThreadPoolExecutor(settings.concurrency) as pool:
        done = list(pool.map(session, range(settings.concurrency)))
    timeline = [item for _, line in done for item in line]
    ttfts = [s["ttft_s"] for report, _ in done for s in report.get("runs") or report["turns"]]
    return {
        "sessions": [report for report, _ in done],
        "aggregate": {**aggregate(timeline), "slowest_ttft_s": max(ttfts)},
    }


def agent_summary(turns: list[dict]) -> dict:
    """Cold (turn 1) against warm (median of later turns) TTFT, and the warm cache share."""
    cold, later = turns[0]["ttft_s"], turns[1:]
    warm = statistics.median(t["ttft_s"] for t in later) if later else None
    return {
        "cold_ttft_s": cold,
        "warm_ttft_s": warm,
        "ttft_ratio": cold / warm if warm else None,
        "warm_cache_share": spread(t["cache_share"] for t in later)["median"],
    }


# ---- output -----------------------------------------------------------------

ROWS = [
    ("ttft_s", "TTFT (s)", 3),
    ("prefill_tps", "prefill (tok/s)", 1),
    ("decode_tps", "decode (tok/s)", 1),
    ("total_s", "total (s)", 3),
    ("prompt_tokens", "prompt tokens", 0),
    ("completion_tokens", "completion tokens", 0),
    ("cached_tokens", "cached tokens", 0),
    ("rss_mb", "server RSS (MB)", 0),
]


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to fit; the first left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            [row[0].ljust(widths[0])]
            + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        ).rstrip()
        for row in [header] + rows
    )


def render_simple(report: dict, settings: Settings) -> str:
    head = (
        f"model {report['model']} at {settings.base_url}: {settings.runs} runs, "
        f"prompt ~{settings.prompt_tokens} tokens, max {settings.max_tokens} tokens"
    )
    rows = [
        [label] + [fmt(report["summary"][key][k], digits) for k in ("min", "median", "max")]
        for key, label, digits in ROWS
        if key != "rss_mb" or settings.server_pid
    ]
    return head + "\n\n" + table(["", "min", "median", "max"], rows)


def render_agent(report: dict, settings: Settings) -> str:
    side, rss = settings.side_requests, settings.server_pid is not None
    head = (
        f"model {report['model']} at {settings.base_url}: agent session, system prompt "
        f"~{settings.system_tokens} tokens, {len(TOOL_SPECS)} tools, {settings.turns} turns, "
        f"max {settings.max_tokens} tokens" + (", a title request before each" if side else "")
    )
    header = ["turn", "TTFT s", "prompt", "cached", "share", "total s"]
    header += ["title TTFT s", "title cached"] if side else []
    rows = []
    for t in report["turns"]:
        row = [
            str(t["turn"]),
            fmt(t["ttft_s"], 3),
            fmt(t["prompt_tokens"]),
            fmt(t["cached_tokens"]),
            share(t["cache_share"]),
            fmt(t["total_s"], 3),
        ]
        row += [fmt(t["side"]["ttft_s"], 3), fmt(t["side"]["cached_tokens"])] if side else []
        rows.append(row + [fmt(t["rss_mb"])] * rss)
    body = table(header + ["RSS MB"] * rss, rows)
    return f"{head}\n\n{body}\n\n{summary_sentence(report['summary'], settings.turns)}"


def render_sessions(report: dict, settings: Settings) -> str:
    """--concurrency N: one row per session, then the aggregate figures."""
    agent = settings.scenario == "agent"
    size = (
        f"system prompt ~{settings.system_tokens} tokens, {settings.turns} turns"
        if agent
        else f"{settings.runs} runs, prompt ~{settings.prompt_tokens} tokens"
    )
    head = (
        f"model {report['model']} at {settings.base_url}: {settings.concurrency} concurrent "
        f"{settings.scenario} sessions, {size}, max {settings.max_tokens} tokens"
    )
    if agent:
        header = ["session", "cold TTFT s", "warm TTFT s", "cold/warm", "warm share"]
        keys = [("cold_ttft_s", 3), ("warm_ttft_s", 3), ("ttft_ratio", 1)]
        rows = [
            [str(s["session"])]
            + [fmt(s["summary"][k], d) for k, d in keys]
            + [share(s["summary"]["warm_cache_share"])]
            for s in report["sessions"]
        ]
    else:
        header = ["session", "TTFT s", "slowest TTFT s", "decode tok/s", "prompt tokens"]
        keys = [("ttft_s", "median", 3), ("ttft_s", "max", 3), ("decode_tps", "median", 1)]
        keys += [("prompt_tokens", "median", 0)]
        rows = [
            [str(s["session"])] + [fmt(s["summary"][k][m], d) for k, m, d in keys]
            for s in report["sessions"]
        ]
    agg = report["aggregate"]
    tail = (
        f"aggregate decode {fmt(agg['decode_tps'], 1)} tok/s over {agg['requests']} requests "
        "(tokens after each first token / seconds when any was decoding); "
        f"slowest TTFT {agg['slowest_ttft_s']:.3f} s."
    )
    return f"{head}\n\n{table(header, rows)}\n\n{tail}"


def summary_sentence(summary: dict, turns: int) -> str:
    cold = f"cold TTFT {summary['cold_ttft_s']:.3f} s (turn 1)"
    if summary["warm_ttft_s"] is None:
        return cold + "; use --turns 2 or more to compare warm turns."
    later = "turn 2" if turns == 2 else f"median of turns 2-{turns}"
    share = summary["warm_cache_share"]
    cached = (
        "" if share is None else (f"\nWarm turns read {share:.0%} of their prompt from the cache.")
    )
    return (
        f"{cold}, warm {summary['warm_ttft_s']:.3f} s ({later}): "
        f"cold/warm ratio {summary['ttft_ratio']:.1f}x.{cached}"
    )


# ---- command line -----------------------------------------------------------

EXAMPLES = """examples:
  ./bench-local.py                       3 cold runs against http://localhost:8000/v1
  ./bench-local.py --scenario agent      replay an 8-turn coding-agent session
  ./bench-local.py --scenario agent --side-requests --json agent.json
  ./bench-local.py --server-pid 4242     also record the server's memory (RSS)
  ./bench-local.py --scenario agent --concurrency 2
                                         two agent sessions at once: per-session
                                         figures, aggregate decode, slowest TTFT
  ./bench-local.py --base-url http://localhost:8080/v1 --model default_model
                                         mlx-lm's own server, whose /v1/models may fail

Prompt sizes are approximate (about 4 characters per token, no tokenizer); the
tables show the token counts the server reports. Progress goes to stderr.
Exit codes: 0 done, 1 the server answered an error, 2 unreachable server, a 404
(wrong --base-url or --model) or bad usage."""


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="bench-local.py",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--base-url", default=d.base_url, help="the server's /v1 address (default %(default)s)")
    add(
        "--model",
        help="model id, sent as is without asking /v1/models "
        "(default: the first id /v1/models lists)",
    )
    add("--api-key", help="sent as 'Authorization: Bearer KEY'")
    add(
        "--scenario",
        choices=["simple", "agent"],
        default=d.scenario,
        help="simple: --runs cold requests; agent: replay a coding-agent session (default simple)",
    )
    add("--runs", type=positive, default=d.runs, help="simple runs (default %(default)s)")
    add("--turns", type=positive, default=d.turns, help="agent turns (default %(default)s)")
    add(
        "--max-tokens",
        type=positive,
        default=d.max_tokens,
        help="tokens to generate per request (default %(default)s)",
    )
    add(
        "--prompt-tokens",
        type=positive,
        default=d.prompt_tokens,
        help="approximate size of the simple prompt (default %(default)s)",
    )
    add(
        "--system-tokens",
        type=positive,
        default=d.system_tokens,
        help="approximate size of the agent's system prompt (default %(default)s)",
    )
    add(
        "--side-requests",
        action="store_true",
        help="agent: send a short title request (other system prompt, no tools) before each turn",
    )
    add(
        "--concurrency",
        type=positive,
        default=d.concurrency,
        help="run N sessions of the scenario at once, each with seed + i (default %(default)s)",
    )
    add(
        "--shared-prompt",
        action="store_true",
        help="with --concurrency: every agent session gets the same system prompt and seed, "
        "so they can share prompt-cache entries",
    )
    add("--server-pid", type=positive, help="record this process's RSS after each run or turn")
    add("--seed", type=int, default=d.seed, help="sampling and prompt seed (default %(default)s)")
    add(
        "--timeout",
        type=float,
        default=d.timeout,
        help="seconds to wait for each request (default %(default)s)",
    )
    add("--json", dest="json_path", metavar="PATH", help="write every raw figure to PATH")
    add("--quiet", action="store_true", help="no progress lines, only the final table")
    return Settings(**vars(p.parse_args(argv)))


def run(settings: Settings) -> int:
    """Benchmark, print the table, write --json; BenchError on any expected failure."""

    def progress(line: str) -> None:
        if not settings.quiet:
            print(line, file=sys.stderr, flush=True)

    client = Client(settings)
    model = pick_model(client, settings)
    if settings.server_pid and server_rss_mb(settings.server_pid) is None:
        progress(f"note: cannot read the memory of process {settings.server_pid}; no RSS figures")
    agent = settings.scenario == "agent"
    if settings.concurrency > 1:
        figures, render = run_sessions(model, settings, progress), render_sessions
    else:
        figures = (run_agent if agent else run_simple)(client, model, settings, progress)
        render = render_agent if agent else render_simple
    report = {
        "base_url": settings.base_url,
        "model": model,
        "scenario": settings.scenario,
        "settings": {k: v for k, v in asdict(settings).items() if k != "api_key"},
        **figures,
    }
    print(render(report, settings))
    if settings.json_path:
        try:
            with open(settings.json_path, "w") as out:
                json.dump(report, out, indent=2)
        except OSError as e:
            raise BenchError(
                f"cannot write --json {settings.json_path}: {e.strerror}", EXIT_USAGE
            ) from None
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        return run(settings)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
