"""Responses <-> chat: pure translation, no server (issue 5)."""

from __future__ import annotations

import pytest

from mlx_native_server.api.errors import ApiError
from mlx_native_server.api.responses.events import Output
from mlx_native_server.api.responses.translate import (
    parse_responses,
    translate_input,
    translate_tools,
)
from mlx_native_server.engine.types import Delta, ToolCall, Usage


def test_string_input_and_instructions():
    assert translate_input("hi", "Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


def test_codex_style_conversation():
    items = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "Sandbox: read-only."}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "list files"}],
        },
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "Use ls."}],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "shell",
            "arguments": '{"command": ["ls"]}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "One file."}],
        },
        {"role": "user", "content": "thanks"},
    ]
    assert translate_input(items, "You are Codex.") == [
        {"role": "system", "content": "You are Codex."},
        {"role": "user", "content": "[system]\nSandbox: read-only."},
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Use ls.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "shell", "arguments": {"command": ["ls"]}},
                }
            ],
        },
        {"role": "tool", "content": "a.txt", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "One file."},
        {"role": "user", "content": "thanks"},
    ]


def test_function_calls_join_the_assistant_message_they_follow():
    out = translate_input(
        [
            {"role": "user", "content": "go"},
            {"type": "message", "role": "assistant", "content": "Reading."},
            {"type": "function_call", "call_id": "a", "name": "read", "arguments": '{"p": 1}'},
            {"type": "function_call", "call_id": "b", "name": "read", "arguments": ""},
        ]
    )
    assert out[1]["content"] == "Reading." and [c["id"] for c in out[1]["tool_calls"]] == ["a", "b"]
    assert out[1]["tool_calls"][1]["function"]["arguments"] == {}


def test_reasoning_summary_is_used_without_content():
    out = translate_input(
        [
            {"role": "user", "content": "x"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Plan."}]},
            {"type": "message", "role": "assistant", "content": "Done."},
        ]
    )
    assert out[1] == {"role": "assistant", "content": "Done.", "reasoning_content": "Plan."}


def test_billing_line_stripped_from_instructions():
    out = translate_input("hi", "x-anthropic-billing-header: cc_version=1; cch=9;\nBe brief.")
    assert out[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"input": "hi", "previous_response_id": "resp_1"}, "stores no responses"),
        ({"input": []}, "'input'"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "stores nothing"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "text only",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]},
            "JSON object",
        ),
        # were a 500: RecursionError and int()'s 4300-digit limit inside json.loads
        (
            {
                "input": [
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[" * 5000}
                ]
            },
            "JSON object",
        ),
        (
            {
                "input": [
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "1" * 5000}
                ]
            },
            "JSON object",
        ),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_bad_requests(body, needle):
    with pytest.raises(ApiError) as e:
        parse_responses(body, "mlx-local")
    assert e.value.status == 400 and needle in e.value.message


def test_tools_keep_functions_only():
    tools = translate_tools(
        [
            {
                "type": "function",
                "name": "shell",
                "description": "Run.",
                "strict": False,
                "parameters": {"type": "object", "properties": {"command": {"type": "array"}}},
            },
            {"type": "web_search"},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
        ]
    )
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "shell",
                "description": "Run.",
                "parameters": {"type": "object", "properties": {"command": {"type": "array"}}},
            },
        }
    ]


def test_options():
    request, opts = parse_responses(
        {
            "model": "mlx-local",
            "input": "hi",
            "max_output_tokens": 50,
            "temperature": 0.2,
            "stream": True,
            "store": False,
            "prompt_cache_key": "s1",
            "reasoning": {"effort": "high"},
            "tools": [{"type": "function", "name": "f"}],
            "tool_choice": "none",
        },
        "mlx-local",
    )
    assert (request.max_tokens, request.temperature, request.session_id, request.tools) == (
        50,
        0.2,
        "s1",
        None,
    )
    assert opts.stream and opts.model == "mlx-local" and opts.echo["tool_choice"] == "none"


def test_output_events_and_final_response():
    out = Output("mlx-local", {"instructions": None})
    call = ToolCall(id="call_9", name="read", arguments='{"path": "a.txt"}')
    events = out.start()
    for d in [
        Delta("reasoning", "Hm"),
        Delta("text", "Su"),
        Delta("text", "re."),
        Delta("tool_call", call=call),
    ]:
        events += out.feed(d)
    events += out.finish(
        "tool_calls", Usage(prompt_tokens=10, cached_tokens=4, completion_tokens=6)
    )
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert (
        types.count("response.output_item.added") == types.count("response.output_item.done") == 3
    )
    assert (
        "response.reasoning_text.delta" in types and types.count("response.output_text.delta") == 2
    )
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Sure."
    assert (
        final["output"][2]["arguments"] == '{"path": "a.txt"}'
        and final["output"][2]["call_id"] == "call_9"
    )
    assert (
        final["usage"]["input_tokens_details"]["cached_tokens"] == 4
        and final["usage"]["total_tokens"] == 16
    )


def test_length_is_incomplete():
    out = Output("m", {})
    out.feed(Delta("text", "x"))
    last = out.finish("length", Usage())[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
