"""The Responses API with the real `openai` SDK against the live server on
the generated model (issue 5)."""

from __future__ import annotations

import openai
import pytest
import requests

SCRIPT = (
    'Let me look.</think>\n\nSure.<minimax:tool_call>\n<invoke name="read">\n'
    '<parameter name="path">a.txt</parameter>\n</invoke>\n</minimax:tool_call>'
)
READ = {
    "type": "function",
    "name": "read",
    "description": "Read a file.",
    "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_create(client):
    r = client.responses.create(
        model="mlx-local", input="hi", instructions="Be brief.", max_output_tokens=100
    )
    assert r.status == "completed" and r.output_text
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.usage.input_tokens > 10 and r.usage.output_tokens > 0


def test_create_with_a_function_call(client):
    r = client.responses.create(
        model="mlx-local",
        input="read a.txt",
        tools=[READ],
        max_output_tokens=100,
        extra_body={"x_mns_script": SCRIPT},
    )
    call = r.output[-1]
    assert (
        call.type == "function_call"
        and call.name == "read"
        and call.arguments == '{"path": "a.txt"}'
    )


def test_stream_and_function_call_round_trip(client):
    stream = client.responses.create(
        model="mlx-local",
        input="read a.txt",
        tools=[READ],
        stream=True,
        max_output_tokens=100,
        extra_body={"x_mns_script": SCRIPT},
    )
    events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert (
        "response.output_text.delta" in types and "response.function_call_arguments.done" in types
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response
    assert done.usage.input_tokens > 10 and done.output[-1].type == "function_call"

    # Send it all back, as Codex does with store: false.
    history = [
        {"role": "user", "content": "read a.txt"},
        *[item.model_dump(exclude_none=True) for item in done.output],
        {"type": "function_call_output", "call_id": done.output[-1].call_id, "output": "hello"},
    ]
    again = client.responses.create(
        model="mlx-local",
        input=history,
        tools=[READ],
        max_output_tokens=100,
        extra_body={"x_mns_script": "Ok.</think>\n\nIt says hello."},
    )
    assert again.output_text == "It says hello."
    assert again.usage.input_tokens_details.cached_tokens > 0


def test_previous_response_id_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="mlx-local", input="hi", previous_response_id="resp_123")
    assert "stores no responses" in e.value.body["message"]


def test_overflow_in_openai_shape(server):
    r = requests.post(
        server.base_url + "/responses", json={"model": "mlx-local", "input": "word " * 5000}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
