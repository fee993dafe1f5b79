"""Issue 6 end to end: a real server keeps an agent session warm across a side
request, writes it to disk at a clean stop, and the restarted server resumes
it from disk on the first request."""

from __future__ import annotations

import time

import requests

SESSION = {"x-session-id": "ses_e2e"}  # OpenCode's header
# ~2,600 tokens of system prompt: enough that the cache matters (not "short")
SYSTEM = "You are a coding agent. Read files, then edit them carefully. " * 80
TITLE = [
    {"role": "system", "content": "Write a short title."},
    {"role": "user", "content": "fix it"},
]
ARGS = ["--max-tokens", "8192", "--prompt-cache-size", "4"]


def chat(srv, messages, headers=None):
    r = requests.post(
        srv.base_url + "/chat/completions",
        timeout=120,
        headers=headers,
        json={"messages": messages, "max_tokens": 8, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    return body, body["usage"]["prompt_tokens_details"]["cached_tokens"]


def done_line(srv, n: int) -> str:
    """The n-th (1-based) 'done:' log line; it is written just after the reply."""
    deadline = time.monotonic() + 10
    while True:
        lines = [ln for ln in srv.app_log().splitlines() if "done: " in ln]
        if len(lines) >= n or time.monotonic() > deadline:
            return lines[n - 1] if len(lines) >= n else ""
        time.sleep(0.1)


def test_session_survives_side_requests_and_a_restart(start_server, tmp_path):
    home = tmp_path / "home"
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "fix the bug"}]
    with start_server(args=ARGS, home=home) as srv:
        first, cached = chat(srv, messages, SESSION)
        assert cached == 0
        chat(srv, TITLE, SESSION)  # OpenCode's title request, same session header
        messages += [
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "and the test"},
        ]
        _, cached = chat(srv, messages, SESSION)
        assert cached > 2000  # the side request did not evict the session
        assert "cache=memory" in done_line(srv, 3)
    cache_files = list((home / "local-models" / ".prompt-cache").glob("*.safetensors"))
    assert cache_files, "a clean stop writes the live entries"

    with start_server(args=ARGS, home=home) as srv:
        messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "go on"}]
        body, cached = chat(srv, messages, SESSION)
        assert cached > 2000 and cached < body["usage"]["prompt_tokens"]
        assert "cache=disk" in done_line(srv, 4)  # the log continues across restarts
        stats = requests.get(srv.root_url + "/status", timeout=10).json()["prompt_cache"]
        assert stats["disk_hits"] == 1 and stats["disk"]["entries"] >= 1
        assert stats["entries"] >= 1 and stats["bytes"] > 0
