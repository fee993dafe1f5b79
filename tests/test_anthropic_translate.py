"""Anthropic Messages <-> chat: pure translation, no server (issue 5)."""

from __future__ import annotations

import json

import pytest

from mlx_native_server.api.anthropic.blocks import Blocks, stop_reason, thinking_signature, usage
from mlx_native_server.api.anthropic.translate import (
    parse_messages,
    translate_messages,
    translate_tools,
)
from mlx_native_server.api.errors import ApiError
from mlx_native_server.engine.types import Delta, ToolCall

BILLING = "x-anthropic-billing-header: cc_version=2.1.12.abc; cc_entrypoint=cli; cch=4f2e1;"


def test_system_string_and_single_block_are_the_same():
    as_string = translate_messages([{"role": "user", "content": "hi"}], "Be brief.")
    as_block = translate_messages(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    )
    assert (
        as_string
        == as_block
        == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )


def test_moving_cache_control_changes_nothing():
    def convo(marked: int):
        blocks = [
            {"type": "text", "text": t} for t in ("<system-reminder>x</system-reminder>", "say hi")
        ]
        blocks[marked]["cache_control"] = {"type": "ephemeral"}
        return translate_messages([{"role": "user", "content": blocks}])

    assert (
        convo(0)
        == convo(1)
        == [{"role": "user", "content": "<system-reminder>x</system-reminder>\n\nsay hi"}]
    )


def test_billing_line_is_dropped_from_system_blocks_and_strings():
    blocks = [{"type": "text", "text": BILLING}, {"type": "text", "text": "You are Claude Code."}]
    as_string = BILLING + "\nYou are Claude Code."
    msgs = [{"role": "user", "content": "hi"}]
    assert translate_messages(msgs, blocks)[0] == {
        "role": "system",
        "content": "You are Claude Code.",
    }
    assert translate_messages(msgs, as_string)[0] == {
        "role": "system",
        "content": "You are Claude Code.",
    }


def test_tool_round_trip_with_thinking_echoed_back():
    msgs = [
        {"role": "user", "content": "read a.txt"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Let me look.", "signature": "anything-at-all"},
                {"type": "text", "text": "Sure."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "read",
                    "input": {"path": "a.txt", "n": 2},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "hello"}],
                },
                {"type": "text", "text": "go on"},
            ],
        },
    ]
    assert translate_messages(msgs) == [
        {"role": "user", "content": "read a.txt"},
        {
            "role": "assistant",
            "content": "Sure.",
            "reasoning_content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "read", "arguments": {"path": "a.txt", "n": 2}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "hello", "name": "read"},
        {"role": "user", "content": "go on"},
    ]


def test_redacted_thinking_is_dropped_and_string_tool_result_kept():
    msgs = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": [
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "tool_use", "id": "t", "name": "ls", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": "a b", "is_error": True}
            ],
        },
    ]
    out = translate_messages(msgs)
    assert out[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "ls", "arguments": {}}}
        ],
    }
    assert out[2] == {"role": "tool", "tool_call_id": "t", "content": "a b", "name": "ls"}


def test_orphan_tool_result_becomes_user_text():
    """After compaction a tool_result may follow no tool_use; the template would refuse a tool turn."""
    out = translate_messages(
        [
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "gone", "content": "42"}],
            }
        ]
    )
    assert out == [{"role": "user", "content": "[tool result gone]\n42"}]


def test_mid_conversation_system_turns_are_hoisted():
    out = translate_messages(
        [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "Plan mode is on."}]},
            {"role": "assistant", "content": "ok"},
        ],
        "Top.",
    )
    assert out == [
        {"role": "system", "content": "Top."},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "[system]\nPlan mode is on."},
        {"role": "assistant", "content": "ok"},
    ]


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
        {"type": "document", "source": {"type": "text", "data": "x"}},
    ],
)
def test_images_and_documents_are_a_clear_400(block):
    with pytest.raises(ApiError) as e:
        translate_messages([{"role": "user", "content": [block]}])
    assert e.value.status == 400 and "text only" in e.value.message


def test_tools_keep_2020_12_schemas_and_skip_server_tools():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}},
        "additionalProperties": False,
    }
    tools = translate_tools(
        [
            {
                "name": "count",
                "description": "Count.",
                "input_schema": schema,
                "defer_loading": True,
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ]
    )
    assert tools == [
        {
            "type": "function",
            "function": {"name": "count", "parameters": schema, "description": "Count."},
        }
    ]


def test_options_and_ignored_fields():
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "top_k": 5,
        "stop_sequences": ["END"],
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "u"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": []},
        "tool_choice": {"type": "none"},
        "tools": [{"name": "a", "input_schema": {"type": "object"}}],
    }
    request, opts = parse_messages(body, "mlx-local")
    assert (request.max_tokens, request.temperature, request.top_k, request.stop) == (
        64,
        0.5,
        5,
        ["END"],
    )
    assert request.tools is None  # tool_choice none
    assert opts.stream and opts.model == "claude-sonnet-4-5" and opts.show_thinking
    _, opts = parse_messages({**body, "thinking": {"type": "disabled"}}, "mlx-local")
    assert not opts.show_thinking


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "'max_tokens' is required"),
        ({"max_tokens": 5, "messages": []}, "'messages' must be a non-empty array"),
        ({"max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}, "role"),
        (
            {"max_tokens": 5, "temperature": 3, "messages": [{"role": "user", "content": "x"}]},
            "'temperature'",
        ),
    ],
)
def test_bad_requests_name_the_field(body, needle):
    with pytest.raises(ApiError) as e:
        parse_messages(body, "mlx-local")
    assert e.value.status == 400 and needle in e.value.message


def test_count_tokens_needs_no_max_tokens():
    request, _ = parse_messages(
        {"messages": [{"role": "user", "content": "hi"}]}, "m", count_only=True
    )
    assert request.max_tokens is None


def _events(blocks, deltas):
    return [e for d in deltas for e in blocks.feed(d)] + blocks.close_block()


def test_blocks_from_deltas():
    blocks = Blocks()
    call = ToolCall(id="call_abc", name="read", arguments=json.dumps({"path": "a.txt"}))
    events = _events(
        blocks,
        [
            Delta("reasoning", "Let me "),
            Delta("reasoning", "look."),
            Delta("text", "Sure."),
            Delta("tool_call", call=call),
        ],
    )
    names = [(name, data.get("delta", {}).get("type")) for name, data in events]
    assert names == [
        ("content_block_start", None),
        ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "signature_delta"),
        ("content_block_stop", None),
        ("content_block_start", None),
        ("content_block_delta", "text_delta"),
        ("content_block_stop", None),
        ("content_block_start", None),
        ("content_block_delta", "input_json_delta"),
        ("content_block_stop", None),
    ]
    assert blocks.content == [
        {
            "type": "thinking",
            "thinking": "Let me look.",
            "signature": thinking_signature("Let me look."),
        },
        {"type": "text", "text": "Sure."},
        {"type": "tool_use", "id": "toolu_abc", "name": "read", "input": {"path": "a.txt"}},
    ]
    assert [data["index"] for _, data in events] == [0] * 5 + [1] * 3 + [2] * 3


def test_hidden_thinking_when_disabled():
    blocks = Blocks(show_thinking=False)
    _events(blocks, [Delta("reasoning", "hm"), Delta("text", "Hi")])
    assert blocks.content == [{"type": "text", "text": "Hi"}]


def test_stop_reasons_and_usage():
    assert stop_reason("stop", None) == "end_turn"
    assert stop_reason("stop", "END") == "stop_sequence"
    assert stop_reason("length", None) == "max_tokens"
    assert stop_reason("tool_calls", None) == "tool_use"
    assert usage(100, 80, 7) == {
        "input_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 80,
        "output_tokens": 7,
    }
