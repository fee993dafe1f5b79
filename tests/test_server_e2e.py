"""The real server, started by ./start-server.sh on the generated model, over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
import requests

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read",
            "description": "Read a file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
]
TOOL_SCRIPT = (
    'I should read the file.</think>\n\nReading it.<minimax:tool_call>\n<invoke name="read">\n'
    '<parameter name="path">a.txt</parameter>\n</invoke>\n</minimax:tool_call>'
)
HELLO = [{"role": "user", "content": "hello"}]


def chat(server, body, **kw):
    return requests.post(server.base_url + "/chat/completions", json=body, timeout=60, **kw)


def sse_events(response) -> list:
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def assert_healthy(server):
    r = requests.get(server.root_url + "/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_models_lists_exactly_the_served_id_with_curl(server):
    out = subprocess.run(
        ["curl", "-sf", server.base_url + "/models"], capture_output=True, text=True, check=True
    )
    body = json.loads(out.stdout)
    assert body["object"] == "list"
    assert [(m["id"], m["object"]) for m in body["data"]] == [("mlx-local", "model")]
    assert {"created", "owned_by"} <= set(body["data"][0])


def test_chat_non_streaming_splits_reasoning_and_reports_usage(server):
    r = chat(server, {"model": "mlx-local", "messages": HELLO, "max_tokens": 200})
    assert r.status_code == 200
    body = r.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["reasoning_content"].startswith("The user wrote something")
    assert choice["message"]["content"].startswith("Hello!")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] > 0
    assert "cached_tokens" in usage["prompt_tokens_details"]


def test_chat_streaming_with_usage_chunk(server):
    r = chat(
        server,
        {"messages": HELLO, "stream": True, "stream_options": {"include_usage": True}},
        stream=True,
    )
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    usage_chunk, finish_chunk = events[-2], events[-3]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    assert "reasoning_tokens" in usage_chunk["usage"]["completion_tokens_details"]
    assert finish_chunk["choices"][0]["finish_reason"] == "stop"
    deltas = [e["choices"][0]["delta"] for e in events[:-2]]
    assert deltas[0]["role"] == "assistant"
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert reasoning.startswith("The user wrote") and content.startswith("Hello!")
    assert "<think>" not in content + reasoning and "</think>" not in content + reasoning


def test_streamed_tool_call_in_the_shape_opencode_reads(server):
    body = {
        "messages": HELLO,
        "tools": TOOLS,
        "stream": True,
        "x_mns_script": TOOL_SCRIPT,
        "stream_options": {"include_usage": True},
    }
    events = sse_events(chat(server, body, stream=True))
    deltas = [e["choices"][0]["delta"] for e in events[:-2]]
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert len(calls) == 1
    first = calls[0]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"]["name"] == "read"
    assert json.loads(first["function"]["arguments"]) == {"path": "a.txt"}
    assert events[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "I should read the file."
    assert "".join(d.get("content") or "" for d in deltas) == "Reading it."


def test_tool_call_non_streaming_and_the_history_round_trip(server):
    body = chat(server, {"messages": HELLO, "tools": TOOLS, "x_mns_script": TOOL_SCRIPT}).json()
    message = body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    call = message["tool_calls"][0]
    # OpenCode echoes the assistant turn back with reasoning_content, then the tool result.
    history = HELLO + [
        {
            "role": "assistant",
            "content": message["content"],
            "reasoning_content": message["reasoning_content"],
            "tool_calls": [call],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "file text"},
    ]
    with_reasoning = chat(server, {"messages": history, "tools": TOOLS, "max_tokens": 5}).json()
    history[1] = {**history[1], "content": None}
    del history[1]["reasoning_content"]
    without = chat(server, {"messages": history, "tools": TOOLS, "max_tokens": 5}).json()
    # Interleaved thinking: the template renders the echoed reasoning.
    assert with_reasoning["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"]


@pytest.mark.parametrize("model", ["mlx-local", None, "MODEL_PATH", "MODEL_NAME"])
def test_served_id_model_path_or_no_model_reach_the_loaded_model(server, demo_model, model):
    body = {"messages": HELLO, "max_tokens": 3}
    if model == "MODEL_PATH":
        body["model"] = str(demo_model)
    elif model == "MODEL_NAME":
        body["model"] = demo_model.name
    elif model:
        body["model"] = model
    assert chat(server, body).status_code == 200


def test_unknown_model_is_a_404_json_error(server):
    r = chat(server, {"model": "mlx-community/Other-Model", "messages": HELLO})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert requests.get(server.base_url + "/models/other", timeout=10).status_code == 404
    assert (
        requests.get(server.base_url + "/models/mlx-local", timeout=10).json()["id"] == "mlx-local"
    )
    assert_healthy(server)


def test_prompt_over_the_context_cap_is_context_length_exceeded(server):
    long = " ".join(f"word{i}" for i in range(5000))  # far above the 4096-token cap
    r = chat(server, {"messages": [{"role": "user", "content": long}]})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert error["message"].startswith(
        "This model's maximum context length is 4096 tokens. However, your messages resulted in "
    )
    assert_healthy(server)


def test_huge_max_tokens_is_clamped_to_the_context(server):
    r = chat(server, {"messages": HELLO, "max_tokens": 1e9})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop"


def test_prompt_cache_reuses_the_conversation(server):
    history = [
        {"role": "system", "content": "You are terse. " * 40},
        {"role": "user", "content": "cache me"},
    ]
    chat(server, {"messages": history, "max_tokens": 4})
    again = chat(server, {"messages": history, "max_tokens": 4}).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"{not json", 400, "Invalid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"messages": HELLO, "max_tokens": "ten"}).encode(), 400, "max_tokens"),
        (json.dumps({"messages": HELLO, "stream": "yes"}).encode(), 400, "stream"),
        (json.dumps({"messages": HELLO, "temperature": 9}).encode(), 400, "temperature"),
        (json.dumps({"messages": 5}).encode(), 400, "messages"),
        (json.dumps({"messages": HELLO, "tools": [{"type": "function"}]}).encode(), 400, "tools"),
    ],
)
def test_bad_input_is_a_json_4xx_and_the_server_stays_healthy(server, data, status, words):
    r = requests.post(
        server.base_url + "/chat/completions",
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == status
    assert words in r.json()["error"]["message"]
    assert_healthy(server)


def test_unknown_path_wrong_method_and_oversized_body(server):
    assert requests.get(server.base_url + "/nope", timeout=10).status_code == 404
    r = requests.get(server.base_url + "/chat/completions", timeout=10)
    assert r.status_code == 405 and "error" in r.json()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n"
        )
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and '"error"' in reply
    assert_healthy(server)


def test_keep_alive_serves_two_requests_on_one_connection(server):
    with requests.Session() as session:
        for _ in range(2):
            r = session.post(
                server.base_url + "/chat/completions", json={"messages": HELLO, "max_tokens": 2}
            )
            assert r.status_code == 200
            assert r.raw.version == 11


def test_client_disconnect_stops_its_generation(server):
    script = "x " * 3000  # far more than the context allows; would run to the cap
    with requests.post(
        server.base_url + "/chat/completions",
        stream=True,
        timeout=30,
        json={"messages": HELLO, "stream": True, "x_mns_script": script},
    ) as r:
        next(r.iter_lines())
    deadline = time.monotonic() + 20
    while "client disconnected" not in server.app_log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "client disconnected" in server.app_log()
    # The engine is free again at once: a short request is served.
    start = time.monotonic()
    assert chat(server, {"messages": HELLO, "max_tokens": 2}).status_code == 200
    assert time.monotonic() - start < 30


def test_non_streaming_client_that_leaves_stops_its_generation(server):
    body = json.dumps({"messages": HELLO, "x_mns_script": "y " * 3000}).encode()
    before = server.app_log().count("client disconnected")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        time.sleep(0.5)
    deadline = time.monotonic() + 20
    while server.app_log().count("client disconnected") == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.app_log().count("client disconnected") > before
    assert chat(server, {"messages": HELLO, "max_tokens": 2}).status_code == 200


def test_an_engine_failure_is_a_500_json_error_and_the_server_stays_healthy(server):
    r = chat(server, {"messages": HELLO, "x_mns_script": "partial answer<<fail>>"})
    assert r.status_code == 500
    assert "engine failed" in r.json()["error"]["message"]
    events = sse_events(
        chat(
            server,
            {"messages": HELLO, "stream": True, "x_mns_script": "partial<<fail>>"},
            stream=True,
        )
    )
    assert events[-1] == "[DONE]"  # the stream still ends as OpenAI streams end
    assert "engine failed" in events[-2]["error"]["message"]
    assert_healthy(server)
    assert chat(server, {"messages": HELLO, "max_tokens": 2}).status_code == 200


def test_metrics_after_real_requests_parse_with_prometheus_client(server):
    from prometheus_client.parser import text_string_to_metric_families

    assert chat(server, {"messages": HELLO, "max_tokens": 3}).status_code == 200
    assert requests.get(server.base_url + "/nope", timeout=10).status_code == 404
    r = requests.get(server.root_url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)

    def value(name, **labels):
        return sum(
            s.value
            for s in samples.get(name, [])
            if all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert (
        value("mlx_native_server_requests_total", endpoint="/v1/chat/completions", status="200")
        >= 1
    )
    assert value("mlx_native_server_requests_total", endpoint="other", status="404") >= 1
    assert value("mlx_native_server_generated_tokens_total") >= 3
    assert value("mlx_native_server_prompt_tokens_total") > 0
    assert value("mlx_native_server_time_to_first_token_seconds_count") >= 1
    assert value("mlx_native_server_engine_state", state="ok") == 1
    assert value("mlx_native_server_memory_active_bytes") > 0
    assert "mlx_native_server_prompt_cache_entries" in samples
    assert "mlx_native_server_requests_waiting" in samples
