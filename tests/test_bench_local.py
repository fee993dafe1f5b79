"""bench-local.py (issue 4): pure helpers, a fake streaming server, and the live server.

The script is run as a user runs it, in a subprocess, and judged by its exit
code, its output and its --json file. The live tests use the `server` fixture
(tests/conftest.py: the real server on the generated fixture model).
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench-local.py"
SAMPLE_FIELDS = {
    "ttft_s",
    "total_s",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "prefill_tps",
    "decode_tps",
    "cache_share",
    "rss_mb",
}
FIRST_TOKEN_DELAY = 0.2  # the fake server's prefill time
DECODE_PAUSE = 0.3  # the fake server's pause after the first token


sys.path.insert(0, str(SCRIPT.parent / "benchmarks"))

from _bench_local import load_bench_local  # noqa: E402

bench = load_bench_local()


def run_bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- pure helpers -------------------------------------------------------------


def test_sse_events_skip_keepalives_and_stop_at_done():
    lines = [
        ": keepalive 10/100",
        "",
        'data: {"a": 1}',
        "event: x",
        'data:{"b": 2}',
        "data: [DONE]",
        'data: {"after": 3}',
    ]
    assert list(bench.sse_events(lines)) == [{"a": 1}, {"b": 2}]


def test_sse_events_reject_a_non_json_line():
    with pytest.raises(bench.BenchError, match="non-JSON"):
        list(bench.sse_events(["data: <html>"]))


def test_spread_ignores_missing_values():
    assert bench.spread([3.0, None, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert bench.spread([None]) == {"min": None, "median": None, "max": None}


def test_synthetic_text_is_about_the_asked_size_and_varied():
    text = bench.synthetic_text(2000, random.Random(1))
    assert 2000 * 4 <= len(text) < 2000 * 4 + 200
    assert len(set(text.split())) > 100
    assert text == bench.synthetic_text(2000, random.Random(1))


def test_measure_counts_reasoning_as_tokens_and_reads_usage():
    events = [
        {"choices": [{"delta": {"role": "assistant"}}]},
        {"choices": [{"delta": {"reasoning_content": "think"}}]},
        {"choices": [{"delta": {"content": "Hi"}}]},
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c1",
                                "function": {"name": "read", "arguments": '{"a"'},
                            }
                        ]
                    }
                }
            ]
        },
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]},
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 80},
                "completion_tokens_details": {"reasoning_tokens": 1},
            },
        },
    ]
    sample = bench.measure(events, time.perf_counter())
    assert (sample.prompt_tokens, sample.completion_tokens) == (100, 5)
    assert (sample.cached_tokens, sample.reasoning_tokens, sample.cache_share) == (80, 1, 0.8)
    assert sample.content == "Hi"
    assert sample.tool_calls[0]["function"] == {"name": "read", "arguments": '{"a": 1}'}
    assert set(sample.figures()) == SAMPLE_FIELDS


def test_follow_up_appends_a_synthetic_tool_call_when_the_model_made_none():
    sample = bench.Sample(0.1, 0.2, 10, 2, 0, None, content="random words")
    reply, result = bench.follow_up(sample, 3, random.Random(0))
    assert reply["role"] == "assistant" and reply["content"] == "random words"
    assert result == {
        "role": "tool",
        "tool_call_id": reply["tool_calls"][0]["id"],
        "content": result["content"],
    }


def test_agent_summary_compares_turn_one_with_the_median_of_later_turns():
    turns = [
        {"ttft_s": t, "cache_share": s}
        for t, s in [(2.0, 0.0), (0.5, 0.9), (0.2, 0.95), (0.4, 0.97)]
    ]
    assert bench.agent_summary(turns) == {
        "cold_ttft_s": 2.0,
        "warm_ttft_s": 0.4,
        "ttft_ratio": 5.0,
        "warm_cache_share": 0.95,
    }


def test_busy_seconds_counts_overlapping_time_once():
    assert bench.busy_seconds([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.8)]) == 4.0
    assert bench.busy_seconds([]) == 0.0


def test_aggregate_divides_tokens_after_each_first_by_the_busy_time():
    # two requests decoding 11 tokens each over the same 2 s: 20 tokens after the firsts
    assert bench.aggregate([(1.0, 3.0, 11), (1.0, 3.0, 11)]) == {"requests": 2, "decode_tps": 10.0}
    assert bench.aggregate([(1.0, 1.0, 1)])["decode_tps"] is None


# ---- command line against no server and against a fake one -------------------


def test_unreachable_server_exits_non_zero_with_how_to_start_it():
    result = run_bench("--base-url", f"http://127.0.0.1:{free_port()}/v1", timeout=60)
    assert result.returncode == 2
    assert "cannot reach the server" in result.stderr
    assert "./start-server.sh" in result.stderr
    assert "Traceback" not in result.stderr


class FakeHandler(BaseHTTPRequestHandler):
    """An HTTP/1.0 OpenAI-style server: un-chunked SSE with a keep-alive comment."""

    prompts: list[int] = []
    answers_to = ("fake-model", "x")

    def log_message(self, *args):
        pass

    def send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        models = [{"id": "fake-model"}, {"id": "broken-model"}]
        self.send_json(200, {"object": "list", "data": models})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body["model"] == "broken-model":
            return self.send_json(500, {"error": {"message": "engine exploded"}})
        if body["model"] not in self.answers_to:
            return self.send_json(404, {"error": {"message": f"model '{body['model']}' not found"}})
        prompt = len(json.dumps(body["messages"])) // 4
        cached = self.prompts[-1] if self.prompts else 0
        self.prompts.append(prompt)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.event(": keepalive 1/2\n\n", FIRST_TOKEN_DELAY)
        self.event('data: {"choices": [{"delta": {"reasoning_content": "hm"}}]}\n\n', DECODE_PAUSE)
        for _ in range(3):
            self.event('data: {"choices": [{"delta": {"content": "word "}}]}\n\n', 0.01)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        self.event(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n", 0)

    def event(self, text: str, then_sleep: float) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()
        time.sleep(then_sleep)


def serve(handler: type[BaseHTTPRequestHandler]):
    """Serve `handler` on a free loopback port; yield its /v1 address."""
    handler.prompts = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def fake_url():
    yield from serve(FakeHandler)


def test_first_token_is_timed_when_it_arrives_not_when_the_stream_ends(fake_url, tmp_path):
    out = tmp_path / "simple.json"
    result = run_bench("--base-url", fake_url, "--runs", "2", "--json", str(out), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "model fake-model" in result.stdout and "TTFT (s)" in result.stdout
    assert "run 2/2" in result.stderr
    for run in json.loads(out.read_text())["runs"]:
        assert FIRST_TOKEN_DELAY <= run["ttft_s"] < FIRST_TOKEN_DELAY + DECODE_PAUSE
        assert run["decode_tps"] == pytest.approx(3 / DECODE_PAUSE, rel=0.5)


class CountingHandler(FakeHandler):
    """The fake server, counting the most chat requests it served at once.
    A request counts itself out before its `[DONE]`: the client may send its
    next one as soon as it reads that, before this handler returns."""

    lock = threading.Lock()
    in_flight = most = 0

    def do_POST(self):
        cls = CountingHandler
        with cls.lock:
            cls.in_flight += 1
            cls.most = max(cls.most, cls.in_flight)
        self.counted = True
        try:
            super().do_POST()
        finally:
            self.leave()

    def event(self, text: str, then_sleep: float) -> None:
        if "[DONE]" in text:
            self.leave()
        super().event(text, then_sleep)

    def leave(self) -> None:
        if self.counted:
            self.counted = False
            with CountingHandler.lock:
                CountingHandler.in_flight -= 1


def test_concurrency_runs_sessions_at_once_and_reports_the_aggregate(tmp_path):
    CountingHandler.most = 0
    out = tmp_path / "sessions.json"
    for url in serve(CountingHandler):
        result = run_bench(
            "--base-url", url, "--concurrency", "3", "--runs", "2", "--json", str(out), timeout=60
        )
    assert result.returncode == 0, result.stderr
    assert CountingHandler.most == 3
    report = json.loads(out.read_text())
    assert [(s["session"], s["seed"]) for s in report["sessions"]] == [(1, 0), (2, 1), (3, 2)]
    assert all(len(s["runs"]) == 2 for s in report["sessions"])
    assert report["aggregate"]["requests"] == 6
    assert report["aggregate"]["decode_tps"] > 0 and report["aggregate"]["slowest_ttft_s"] > 0
    assert "3 concurrent simple sessions" in result.stdout
    assert "aggregate decode" in result.stdout and "slowest TTFT" in result.stdout
    assert "[session 3] run 2/2" in result.stderr


def test_a_model_the_server_does_not_serve_exits_2_with_its_404(fake_url):
    result = run_bench("--base-url", fake_url, "--model", "nope", timeout=60)
    assert result.returncode == 2
    assert "404" in result.stderr and "model 'nope' not found" in result.stderr
    assert "--model" in result.stderr and "Traceback" not in result.stderr


class BrokenModelsHandler(FakeHandler):
    """A server whose GET /v1/models fails, as mlx-lm's own does without a
    Hugging Face cache folder (it sends 200, then its handler raises), while
    its chat endpoint works."""

    gets: list[str] = []

    def do_GET(self):
        self.gets.append(self.path)
        if self.path.endswith("/cut-off/models"):
            self.send_response(200)  # headers sent, then the handler crashed: no body
            self.end_headers()
            return
        data = b"CacheNotFound: Cache directory not found"
        self.send_response(500)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def broken_models_url():
    BrokenModelsHandler.gets = []
    yield from serve(BrokenModelsHandler)


@pytest.mark.parametrize("prefix", ["/v1", "/cut-off"])
def test_model_flag_skips_a_broken_model_list(broken_models_url, prefix, tmp_path):
    """Regression: `--model ID` exited 2 against mlx-lm's server because its
    /v1/models crashed; with --model the benchmark goes straight to the chat."""
    base_url = broken_models_url.removesuffix("/v1") + prefix
    out = tmp_path / "simple.json"
    result = run_bench(
        "--base-url", base_url, "--model", "x", "--runs", "1", "--json", str(out), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "model x" in result.stdout and "TTFT (s)" in result.stdout
    assert json.loads(out.read_text())["runs"][0]["completion_tokens"] == 4
    assert BrokenModelsHandler.gets == []


@pytest.mark.parametrize("prefix", ["/v1", "/cut-off"])
def test_without_model_flag_a_broken_model_list_says_to_pass_one(broken_models_url, prefix):
    base_url = broken_models_url.removesuffix("/v1") + prefix
    result = run_bench("--base-url", base_url, timeout=60)
    assert result.returncode == (1 if prefix == "/v1" else 2)
    assert "/models" in result.stderr and "--model ID" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_error_exits_1_with_its_message(fake_url):
    result = run_bench("--base-url", fake_url, "--model", "broken-model", timeout=60)
    assert result.returncode == 1
    assert "500" in result.stderr and "engine exploded" in result.stderr
    assert "Traceback" not in result.stderr


# ---- the live server on the fixture model ---------------------------------------


@pytest.fixture
def live(request):
    """The real server (tests/conftest.py); skipped while conftest does not provide it."""
    try:
        return request.getfixturevalue("server")
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py has no `server` fixture yet")


def test_short_run_against_the_live_server(live, tmp_path):
    out = tmp_path / "simple.json"
    result = run_bench(
        "--base-url",
        live.base_url,
        "--runs",
        "2",
        "--max-tokens",
        "8",
        "--prompt-tokens",
        "300",
        "--server-pid",
        str(live.pid),
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert {"base_url", "model", "scenario", "settings", "runs", "summary"} <= set(report)
    assert len(report["runs"]) == 2
    for run in report["runs"]:
        assert set(run) == SAMPLE_FIELDS
        assert run["prompt_tokens"] > 100 and run["completion_tokens"] >= 1
        assert run["rss_mb"] > 0
    assert set(report["summary"]["ttft_s"]) == {"min", "median", "max"}
    assert report["model"] in result.stdout


def run_agent(live, out, *args):
    """The agent scenario against the live server with a short system prompt
    and replies; its completed process and JSON report."""
    result = run_bench(
        "--base-url", live.base_url, "--scenario", "agent", "--system-tokens", "300",
        "--max-tokens", "8", "--json", str(out), *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text())


def test_agent_scenario_reuses_the_prompt_cache_on_warm_turns(live, tmp_path):
    out = tmp_path / "agent.json"
    result, report = run_agent(live, out, "--turns", "3")
    turns = report["turns"]
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert all(set(t) == SAMPLE_FIELDS | {"turn", "side"} for t in turns)
    assert turns[1]["prompt_tokens"] > turns[0]["prompt_tokens"]  # append-only growth
    assert all(t["cached_tokens"] > 0 for t in turns[1:])
    assert set(report["summary"]) == {
        "cold_ttft_s",
        "warm_ttft_s",
        "ttft_ratio",
        "warm_cache_share",
    }
    assert "cold/warm ratio" in result.stdout


def test_agent_scenario_with_side_requests_records_them(live, tmp_path):
    out = tmp_path / "side.json"
    result = run_bench(
        "--base-url",
        live.base_url,
        "--scenario",
        "agent",
        "--turns",
        "3",
        "--system-tokens",
        "300",
        "--max-tokens",
        "8",
        "--side-requests",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    turns = json.loads(out.read_text())["turns"]
    assert all(set(t["side"]) == SAMPLE_FIELDS for t in turns)
    assert "title TTFT s" in result.stdout


def test_concurrent_agent_sessions_against_the_live_server(live, tmp_path):
    out = tmp_path / "sessions.json"
    result, report = run_agent(live, out, "--concurrency", "2", "--turns", "2")
    sessions = report["sessions"]
    assert len(sessions) == 2 and report["aggregate"]["requests"] == 4
    assert all(s["turns"][1]["cached_tokens"] > 0 for s in sessions)  # each kept its cache
    assert "2 concurrent agent sessions" in result.stdout and "cold TTFT s" in result.stdout
