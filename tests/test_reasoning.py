"""Message normalisation for the MiniMax template, and error shaping (pure)."""

import pytest

from mlx_native_server.api.errors import ApiError, context_overflow, error_body
from mlx_native_server.api.reasoning import normalize_messages, split_inline_think


def test_reasoning_content_reasoning_and_inline_think_all_reach_the_template():
    msgs = normalize_messages(
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "x", "reasoning_content": "r1"},
            {"role": "assistant", "content": "y", "reasoning": "r2"},
            {"role": "assistant", "content": "<think>\nr3\n</think>\n\nz"},
        ]
    )
    assert [(m.get("reasoning_content"), m["content"]) for m in msgs[1:]] == [
        ("r1", "x"),
        ("r2", "y"),
        ("r3", "z"),
    ]


def test_null_or_empty_content_beside_tool_calls_and_string_arguments_become_a_mapping():
    msgs = normalize_messages(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "read "}, {"type": "text", "text": "it"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "read", "arguments": '{"path": "a"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "text"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "ls", "arguments": ""},
                    }
                ],
            },
        ]
    )
    assert msgs[0]["content"] == "read it"
    assert msgs[1]["content"] == "" and msgs[1]["tool_calls"][0]["function"]["arguments"] == {
        "path": "a"
    }
    assert msgs[2] == {"role": "tool", "content": "text", "tool_call_id": "call_1"}
    assert msgs[3]["tool_calls"][0]["function"]["arguments"] == {}


def test_later_system_turn_is_kept_as_a_marked_user_turn():
    msgs = normalize_messages(
        [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "system", "content": "late"},
        ]
    )
    assert msgs[0] == {"role": "system", "content": "s"}
    assert msgs[2] == {"role": "user", "content": "[system]\nlate"}


@pytest.mark.parametrize(
    "messages, words",
    [
        ([], "non-empty array"),
        ("hello", "non-empty array"),
        ([{"role": "wizard", "content": "x"}], "role"),
        ([{"role": "user", "content": 5}], "content"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "images",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}],
                }
            ],
            "JSON object",
        ),
        # were a 500: RecursionError and int()'s 4300-digit limit inside json.loads
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": "[" * 5000}}],
                }
            ],
            "JSON object",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": "1" * 5000}}],
                }
            ],
            "JSON object",
        ),
    ],
)
def test_bad_messages_are_a_400_naming_the_field(messages, words):
    with pytest.raises(ApiError, match=words) as e:
        normalize_messages(messages)
    assert e.value.status == 400


def test_split_inline_think_leaves_plain_text_alone():
    assert split_inline_think("plain") == (None, "plain")


def test_error_shapes():
    e = context_overflow(100, 150, "openai")
    assert error_body(e, "openai") == {
        "error": {
            "message": "This model's maximum context length is 100 tokens. "
            "However, your messages resulted in 150 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    a = context_overflow(100, 150, "anthropic")
    assert error_body(a, "anthropic") == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 150 tokens > 100 maximum",
        },
    }
    assert (
        error_body(ApiError(500, "boom", "server_error"), "anthropic")["error"]["type"]
        == "api_error"
    )
