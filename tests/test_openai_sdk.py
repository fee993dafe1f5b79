"""The same calls through the real openai Python SDK."""

from __future__ import annotations

import json

import openai
import pytest

from test_server_e2e import TOOL_SCRIPT, TOOLS

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["mlx-local"]


def test_create_with_reasoning_and_usage(client):
    r = client.chat.completions.create(model="mlx-local", messages=HELLO, max_tokens=200)
    message = r.choices[0].message
    assert message.content.startswith("Hello!")
    assert message.model_extra["reasoning_content"].startswith("The user wrote")
    assert r.usage.completion_tokens_details.reasoning_tokens > 0
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_stream_with_include_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="mlx-local", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello!")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_tool_call_stream_accumulates_like_a_client(client):
    calls = {}
    finish = None
    for c in client.chat.completions.create(
        model="mlx-local",
        messages=HELLO,
        tools=TOOLS,
        stream=True,
        extra_body={"x_mns_script": TOOL_SCRIPT},
    ):
        for tc in c.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(
                tc.index, {"id": tc.id, "name": tc.function.name, "arguments": ""}
            )
            entry["arguments"] += tc.function.arguments or ""
        finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["id"].startswith("call_") and calls[0]["name"] == "read"
    assert json.loads(calls[0]["arguments"]) == {"path": "a.txt"}


def test_tool_call_non_streaming(client):
    r = client.chat.completions.create(
        model="mlx-local", messages=HELLO, tools=TOOLS, extra_body={"x_mns_script": TOOL_SCRIPT}
    )
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "read" and json.loads(call.function.arguments) == {"path": "a.txt"}


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-5", messages=HELLO)
    assert e.value.code == "model_not_found"


def test_context_overflow_raises_bad_request_with_the_code(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="mlx-local",
            messages=[{"role": "user", "content": " ".join(f"w{i}" for i in range(6000))}],
        )
    assert e.value.code == "context_length_exceeded"
    assert "maximum context length is 4096 tokens" in e.value.message
