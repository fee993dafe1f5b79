"""Concurrent requests on the real engine: continuous batching at full and
quantized KV, as the HTTP clients see it.

The demo model's greedy reply hardly depends on the prompt, so the tests
that check which tokens reach which stream give each request a forced
reply of its own (test hooks); the equality test compares the model's own
greedy replies alone and batched.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

CHAT = "/v1/chat/completions"


def ask(srv, content: str, max_tokens: int = 40, **extra) -> dict:
    body = {
        "model": "mlx-local",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }
    r = requests.post(srv.root_url + CHAT, json=body, timeout=300)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def batching(srv) -> dict:
    return requests.get(srv.root_url + "/status", timeout=10).json()["batching"]


def together(fn, items) -> list:
    """fn(item) for every item at once, each on its own thread."""
    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(fn, items))


PROMPTS = [
    "hi",
    "list the files in this directory please " * 3,
    "what is the capital of France? " * 12,
    "a much longer question that goes on and on " * 30,
]


@pytest.fixture(scope="module", params=["4-bit from the start", "full precision"])
def kv_server(request, demo_model, tmp_path_factory):
    from conftest import ServerProcess

    kv = ["--quantized-kv-start", "0"] if request.param.startswith("4") else ["--kv-bits", "0"]
    srv = ServerProcess(
        tmp_path_factory.mktemp("batching"),
        ["--model", str(demo_model), "--max-tokens", "8192", "--prompt-cache-size", "0", *kv],
    )
    srv.start()
    yield srv
    srv.stop()


def test_greedy_replies_are_the_same_alone_and_batched(kv_server):
    def reply(prompt: str) -> str:
        return ask(kv_server, prompt, max_tokens=48)["choices"][0]["message"]

    alone = [reply(p) for p in PROMPTS]
    before = batching(kv_server)
    batched = together(reply, PROMPTS)
    stats = batching(kv_server)
    assert stats["batched_steps"] > before["batched_steps"], "the requests never decoded together"
    assert batched == alone
    # Every decode step hands out a token to each sequence in it, in measured time.
    steps = stats["steps"] - before["steps"]
    assert stats["decoded_tokens"] - before["decoded_tokens"] > steps
    assert stats["decode_seconds"] > before["decode_seconds"]
    assert stats["attention"] == "mlx"  # the fused kernel is CUDA's (test_cuda_attention.py)
    assert stats["experts"] == "mlx"  # so are the experts kernels (test_cuda_experts.py)


def test_each_stream_gets_its_own_tokens(kv_server):
    scripts = [f"Ok.</think>\n\nreply number {i}: " + "word " * (5 + 7 * i) for i in range(4)]

    def reply(script: str) -> str:
        out = ask(kv_server, "go", max_tokens=200, x_mns_script=script)
        return out["choices"][0]["message"]["content"]

    before = batching(kv_server)["batched_steps"]
    got = together(reply, scripts)
    assert batching(kv_server)["batched_steps"] > before
    assert [g.strip() for g in got] == [s.split("\n\n", 1)[1].strip() for s in scripts]


def stream_deltas(srv, body: dict, on_delta=None) -> tuple[str, str | None]:
    """Stream a chat completion; (content, finish_reason). `on_delta(n)` is
    called after each content delta and may return True to hang up."""
    import json

    body = {"model": "mlx-local", "stream": True, "temperature": 0, **body}
    content, finish, n = "", None, 0
    with requests.post(srv.root_url + CHAT, json=body, stream=True, timeout=300) as r:
        assert r.status_code == 200, r.text[:300]
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"]
            if not choice:
                continue
            content += choice[0]["delta"].get("content") or ""
            finish = choice[0].get("finish_reason") or finish
            n += 1
            if on_delta is not None and on_delta(n):
                return content, "hung up"
    return content, finish


def test_cancelling_one_stream_leaves_the_others_running(kv_server):
    long = "Ok.</think>\n\n" + "busy " * 300
    results: dict[str, tuple] = {}

    def run(name: str, hang_up=None):
        body = {
            "messages": [{"role": "user", "content": name}],
            "max_tokens": 2000,
            "x_mns_script": long,
        }
        results[name] = stream_deltas(kv_server, body, on_delta=hang_up)

    def leaver():
        run("left", hang_up=lambda n: n >= 20)

    def stayer():
        run("stayed")

    threads = [threading.Thread(target=f) for f in (stayer, leaver)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results["left"][1] == "hung up"
    content, finish = results["stayed"]
    assert finish == "stop" and content.strip() == long.split("\n\n", 1)[1].strip()
    deadline = time.time() + 30
    while batching(kv_server)["decoding"] and time.time() < deadline:
        time.sleep(0.2)  # the engine notices the hang-up at its next token
    assert batching(kv_server)["decoding"] == 0
    assert ask(kv_server, "still there?", max_tokens=4)["choices"]


def test_a_side_request_overtakes_a_long_generation(kv_server):
    long = "Ok.</think>\n\n" + "busy " * 1500
    events: dict[str, float] = {}
    started = threading.Event()

    def generation():
        stream_deltas(
            kv_server,
            {
                "messages": [{"role": "user", "content": "write"}],
                "max_tokens": 6000,
                "x_mns_script": long,
            },
            on_delta=lambda n: started.set(),
        )
        events["long done"] = time.monotonic()

    t = threading.Thread(target=generation)
    t.start()
    assert started.wait(120)
    ask(kv_server, "a title for this chat", max_tokens=6)
    events["side done"] = time.monotonic()
    t.join(600)
    assert events["side done"] < events["long done"], "the side request waited for the long one"


def test_a_prompt_that_comes_during_a_prefill_starts_with_it(kv_server):
    """Two agents that send at once: the second prompt arrives while the
    first prefills, and the first's first token waits for it, so every step
    of the pair decodes both (none decodes the first alone)."""
    script = "Ok.</think>\n\n" + "same " * 20
    long_prompt = "a much longer question that goes on and on " * 80  # ~1800 tokens: one chunk
    before = batching(kv_server)
    first = threading.Thread(
        target=ask, args=(kv_server, long_prompt, 200), kwargs={"x_mns_script": script}
    )
    first.start()
    deadline = time.monotonic() + 60
    while not batching(kv_server)["prefilling"] and time.monotonic() < deadline:
        time.sleep(0.002)
    second = ask(kv_server, "a title for it", max_tokens=200, x_mns_script=script)
    first.join(300)
    after = batching(kv_server)
    steps = after["steps"] - before["steps"]
    assert second["choices"][0]["message"]["content"].strip() == "same " * 19 + "same"
    assert steps > 0 and after["batched_steps"] - before["batched_steps"] == steps


def test_concurrent_sessions_keep_the_cache_in_budget_and_their_own_entries(start_server):
    budget = 1_000_000  # bytes: room for about two of the four sessions' entries
    args = ["--quantized-kv-start", "0", "--prompt-cache-bytes", str(budget)]
    sessions = [f"ses_{i}" for i in range(4)]

    def turn(session: str, follow_up: bool = False) -> int:
        messages = [{"role": "user", "content": f"{session}: " + "read the file again " * 300}]
        if follow_up:
            messages += [
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "and then?"},
            ]
        r = requests.post(
            srv.base_url + "/chat/completions",
            json={"messages": messages, "max_tokens": 16, "temperature": 0},
            headers={"x-session-id": session},
            timeout=300,
        )
        assert r.status_code == 200, r.text[:300]
        return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    with start_server(args=args) as srv:
        assert together(turn, sessions) == [0, 0, 0, 0]
        stats = requests.get(srv.root_url + "/status", timeout=10).json()
        assert stats["batching"]["batched_steps"] > 0
        cache = stats["prompt_cache"]
        assert 0 < cache["bytes"] <= budget and cache["entries"] < 4
        # Each session's own state survived, in memory or spilled to disk.
        assert all(cached > 1000 for cached in (turn(s, follow_up=True) for s in sessions))


def test_seeded_requests_run_alone_and_repeat(kv_server):
    """mlx's random state is global: a request with a seed runs alone, so
    the same seed gives the same sampled reply, other requests or not."""

    def sampled(_):
        out = ask(kv_server, "tell me a story", max_tokens=24, temperature=1.0, seed=7)
        return out["choices"][0]["message"]

    alone = sampled(None)
    side = threading.Thread(target=ask, args=(kv_server, "busy", 200), kwargs={"temperature": 1.0})
    side.start()
    assert together(sampled, range(3)) == [alone] * 3
    side.join(300)
