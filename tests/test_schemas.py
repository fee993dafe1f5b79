"""Request bodies checked at the boundary: json_body (bytes -> dict) and
schemas (the declared fields of each API). Pure: no server, no mlx.

Regression tests for a hostile-neighbour fuzz of the server: values that
reached mlx-lm unchecked (and crashed its sampler, taking the engine down)
and bodies that crashed the handlers or the log.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlx_native_server.api.errors import ApiError, error_body
from mlx_native_server.api.schemas.models import (
    effective_seed,
    effective_top_k,
    validate_anthropic_messages,
    validate_openai_chat,
    validate_responses,
)
from mlx_native_server.api.schemas.openapi import document as openapi
from mlx_native_server.http.json_body import MAX_DEPTH, parse_json_body

HI = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return {"model": "mlx-local", "messages": HI, **fields}


def anthropic(**fields):
    return {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": HI, **fields}


def refused(validate, body, **kw) -> ApiError:
    with pytest.raises(ApiError) as e:
        validate(body, **kw)
    assert e.value.status == 400 and e.value.type == "invalid_request_error"
    return e.value


def refused_bytes(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse_json_body(raw)
    assert e.value.status == 400
    return e.value


# --- json_body ---------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_literal_refused(literal):
    e = refused_bytes(b'{"messages": [], "min_p": %s}' % literal.encode())
    assert literal in e.message


def test_1e309_overflowing_float_refused():
    assert "1e309" in refused_bytes(b'{"max_tokens": 1e309}').message
    assert parse_json_body(b'{"a": 1e308, "b": 1e-400}') == {"a": 1e308, "b": 0.0}


def test_10000_level_nesting_is_a_400():
    """json's C scanner raised RecursionError (a 500) around depth 1000."""
    e = refused_bytes(b'{"a": ' + b"[" * 10000 + b"]" * 10000 + b"}")
    assert f"deeper than {MAX_DEPTH}" in e.message


def test_nesting_limit_is_exact():
    def nested(levels: int) -> bytes:  # the top-level object is level 1
        return b'{"a": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

    assert parse_json_body(nested(MAX_DEPTH))
    refused_bytes(nested(MAX_DEPTH + 1))
    refused_bytes(b'{"a": ' + b'{"b": ' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH + b"}")


def test_5000_digit_integer_is_a_400():
    """int() of more than 4300 digits raised ValueError (a 500)."""
    e = refused_bytes(b'{"seed": ' + b"9" * 5000 + b"}")
    assert "5000 digits" in e.message
    refused_bytes(b'{"seed": -' + b"9" * 41 + b"}")
    assert parse_json_body(b'{"seed": ' + b"9" * 40 + b"}")["seed"] == 10**40 - 1
    assert (
        parse_json_body(json.dumps({"seed": 2**64}).encode())["seed"] == 2**64
    )  # the schema refuses it


def test_lone_surrogate_in_content_is_a_400_naming_the_path():
    raw = b'{"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "a\\udc00b"}]}'
    e = refused_bytes(raw)
    assert e.param == "messages.1.content" and "'messages[1].content'" in e.message


def test_lone_surrogate_in_a_key_is_a_400():
    e = refused_bytes(b'{"tools": [{"input_schema": {"properties": {"\\ud800x": {}}}}]}')
    assert e.param == "tools.0.input_schema.properties.\\ud800x"


def test_surrogate_model_gets_a_loggable_400():
    """`{"model": "\\ud800", "messages": []}` got no response and broke the log handler."""
    e = refused_bytes(b'{"model": "\\ud800", "messages": []}')
    assert e.param == "model"
    for shape in ("openai", "anthropic"):
        json.dumps(error_body(e, shape), ensure_ascii=False).encode(
            "utf-8"
        )  # no UnicodeEncodeError


def test_surrogate_pairs_and_non_ascii_are_text():
    body = parse_json_body('{"a": "\\ud83d\\ude00 caf\u00e9", "b\u00e9": ["\u4e2d"]}'.encode())
    assert body == {"a": "\U0001f600 caf\u00e9", "b\u00e9": ["\u4e2d"]}


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\xff{}", "not valid UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "not valid UTF-8"),  # a surrogate encoded as bytes
        (
            b"{not json",
            "Invalid JSON in request body: Expecting property name enclosed in double quotes "
            "at line 1 column 2",
        ),
        (b'{"a": 1,\n "b": }', "line 2 column 7"),
        (b"", "empty"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b'"x"', "must be a JSON object, got a string"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(raw, words):
    assert words in refused_bytes(raw).message


def test_a_leading_bom_is_tolerated():
    assert parse_json_body(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


# --- sampling ranges ---------------------------------------------------------


def test_top_k_1024_is_accepted_and_huge_top_k_refused():
    """top_k past the vocabulary is the engine's to clamp; past int32 it is junk."""
    for validate, body in ((validate_openai_chat, chat), (validate_anthropic_messages, anthropic)):
        validate(body(top_k=1024))
        validate(body(top_k=2**31 - 1))
        for bad in (2**31, 2**63 - 1, -2, 1.5, True, "5"):
            assert refused(validate, body(top_k=bad)).param == "top_k"


def test_top_k_minus_one_means_off():
    validate_openai_chat(chat(top_k=-1))
    assert effective_top_k(-1) == 0 and effective_top_k(40) == 40 and effective_top_k(None) is None


def test_min_p_nan_refused():
    e = refused(validate_openai_chat, chat(min_p=float("nan")))
    assert e.param == "min_p" and e.message == "'min_p' must be a number from 0 to 1, got NaN."
    validate_openai_chat(chat(min_p=0))
    validate_openai_chat(chat(min_p=1.0))


def test_top_p_message_names_the_range():
    e = refused(validate_openai_chat, chat(top_p=0))
    assert e.message == "'top_p' must be a number greater than 0 and at most 1, got 0."
    assert e.param == "top_p"
    validate_responses({"input": "hi", "top_p": 1})


def test_temperature_keeps_each_apis_range_and_must_be_finite():
    validate_openai_chat(chat(temperature=2))
    validate_responses({"input": "hi", "temperature": 2})
    validate_anthropic_messages(anthropic(temperature=1))
    refused(validate_openai_chat, chat(temperature=2.5))
    refused(validate_anthropic_messages, anthropic(temperature=1.5))
    for bad in (float("inf"), float("nan"), -0.1, "0.5", False):
        assert refused(validate_openai_chat, chat(temperature=bad)).param == "temperature"


def test_seed_minus_one_means_random():
    validate_openai_chat(chat(seed=-1))
    validate_openai_chat(chat(seed=0))
    assert effective_seed(-1) is None and effective_seed(None) is None and effective_seed(7) == 7


def test_seed_2_64_refused():
    validate_openai_chat(chat(seed=2**64 - 1))
    for bad in (2**64, -2, 1.0, "7"):
        e = refused(validate_openai_chat, chat(seed=bad))
        assert e.param == "seed" and "18446744073709551615" in e.message


# --- counts, types -----------------------------------------------------------


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
def test_openai_max_tokens_is_a_positive_whole_number(name):
    for good in (1, 100, 100.0, 1e9, 10**30):
        validate_openai_chat(chat(**{name: good}))
    for bad in (0, -5, 100.5, float("inf"), float("nan"), True, "ten"):
        e = refused(validate_openai_chat, chat(**{name: bad}))
        assert e.param == name and "a whole number of at least 1" in e.message


def test_anthropic_and_responses_counts_are_integers_as_their_parsers_want():
    assert refused(validate_anthropic_messages, anthropic(max_tokens=5.0)).param == "max_tokens"
    assert refused(validate_anthropic_messages, anthropic(max_tokens=0)).param == "max_tokens"
    assert (
        refused(validate_responses, {"input": "hi", "max_output_tokens": 0}).param
        == "max_output_tokens"
    )
    e = refused(validate_anthropic_messages, {"messages": HI})
    assert e.message == "'max_tokens' is required." and e.param == "max_tokens"
    validate_anthropic_messages({"messages": HI}, count_only=True)
    refused(validate_anthropic_messages, {"messages": HI, "max_tokens": -1}, count_only=True)


def test_model_must_be_a_string():
    """`"model": []` reached a set lookup: unhashable list, a 500."""
    for validate, body in (
        (validate_openai_chat, chat(model=[])),
        (validate_anthropic_messages, anthropic(model={"id": "x"})),
        (validate_responses, {"model": 5, "input": "hi"}),
    ):
        e = refused(validate, body)
        assert e.param == "model" and e.message.startswith("'model' must be a string")
    validate_openai_chat({"messages": HI})  # no model: the served one


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"stream": "yes"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"n": True}, "n"),
        ({"n": 1.0}, "n"),
        ({"stop": ["END", 5]}, "stop"),
        ({"stream_options": []}, "stream_options"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [{"type": "function"}]}, "tools.0.function"),
        ({"tools": [{"type": "function", "function": {"name": 5}}]}, "tools.0.function.name"),
        ({"chat_template_kwargs": "x"}, "chat_template_kwargs"),
    ],
)
def test_strict_types_where_the_parser_is_strict(fields, param):
    assert refused(validate_openai_chat, chat(**fields)).param == param


@pytest.mark.parametrize(
    "messages, param, words",
    [
        (5, "messages", "'messages' must be an array, got 5."),
        ([], "messages", "'messages' must be a non-empty array"),
        (["hi"], "messages.0", "must be an object"),
        ([{"content": "x"}], "messages.0.role", "'messages[0].role' is required."),
        (
            [{"role": "wizard"}],
            "messages.0.role",
            "'system', 'user', 'assistant', 'tool' or 'developer'",
        ),
        (
            [{"role": "user", "content": 5}],
            "messages.0.content",
            "a string, null or an array of text parts",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": 5}],
                }
            ],
            "messages.0.content.1.text",
            "'messages[0].content[1].text' must be a string, got 5.",
        ),
        (
            [{"role": "user", "content": [{"type": "text"}]}],
            "messages.0.content.0.text",
            "is required",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}],
            "messages.0.tool_calls.0.function.name",
            "is required",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 5}}]}],
            "messages.0.tool_calls.0.function.arguments",
            "a JSON string or an object",
        ),
    ],
)
def test_chat_messages_name_the_first_bad_field(messages, param, words):
    e = refused(validate_openai_chat, chat(messages=messages))
    assert e.param == param and words in e.message


@pytest.mark.parametrize(
    "body, param",
    [
        (anthropic(messages=[{"role": "robot", "content": "x"}]), "messages.0.role"),
        (
            anthropic(
                messages=[
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]}
                ]
            ),
            "messages.0.content.0.name",
        ),
        (
            anthropic(
                messages=[{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]
            ),
            "messages.0.content.0.tool_use_id",
        ),
        (
            anthropic(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "text", "text": None}],
                            }
                        ],
                    }
                ]
            ),
            "messages.0.content.0.content.0.text",
        ),
        (anthropic(messages=[{"role": "user", "content": ["hi"]}]), "messages.0.content.0"),
        (anthropic(system=5), "system"),
        (anthropic(stop_sequences="END"), "stop_sequences"),
        (anthropic(tools=[{"description": "no name"}]), "tools.0.name"),
        (anthropic(tools=[{"name": "a", "input_schema": "x"}]), "tools.0.input_schema"),
        (anthropic(tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (anthropic(thinking={"type": "on"}), "thinking.type"),
    ],
)
def test_anthropic_bodies_name_the_first_bad_field(body, param):
    assert refused(validate_anthropic_messages, body).param == param


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "input"),
        ({"input": 5}, "input"),
        ({"input": []}, "input"),
        ({"input": ["hi"]}, "input.0"),
        ({"input": [{"content": "no role, no type"}]}, "input.0.type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input.0.content.0.text",
        ),
        ({"input": [{"type": "function_call", "arguments": "{}"}]}, "input.0.name"),
        ({"input": [{"type": "reasoning", "summary": [{"text": None}]}]}, "input.0.summary.0.text"),
        ({"input": [{"type": "function_call_output", "output": 5}]}, "input.0.output"),
        ({"input": "hi", "instructions": ["x"]}, "instructions"),
        ({"input": "hi", "tools": [{"type": "function"}]}, "tools.0.name"),
        ({"input": "hi", "prompt_cache_key": 5}, "prompt_cache_key"),
    ],
)
def test_responses_bodies_name_the_first_bad_field(body, param):
    assert refused(validate_responses, body).param == param


def test_unknown_fields_are_ignored():
    validate_openai_chat(
        chat(
            logprobs=True,
            response_format={"type": "json_object"},
            user="u",
            frequency_penalty=0.5,
            x_mns_script="hi",
            providerOptions={"a": 1},
            messages=[{"role": "user", "content": "x", "cache_control": {}}],
        )
    )
    validate_anthropic_messages(
        anthropic(
            metadata={"user_id": "u"},
            service_tier="auto",
            context_management={"edits": []},
            output_config={"effort": "high"},
        )
    )
    validate_responses(
        {
            "input": "hi",
            "store": False,
            "include": ["reasoning.encrypted_content"],
            "text": {"verbosity": "low"},
            "reasoning": {"effort": "high", "summary": "auto"},
        }
    )


# --- what the existing tests and real clients send -------------------------

BILLING = "x-anthropic-billing-header: cc_version=2.1.12.abc; cc_entrypoint=cli; cch=4f2e1;"
SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}},
    "additionalProperties": False,
}
CLAUDE_TURNS = [
    {
        "role": "user",
        "content": [
            {
                "type": "text",
                "text": "<system-reminder>x</system-reminder>",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": "read a.txt"},
        ],
    },
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Let me look.", "signature": "anything-at-all"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Sure.", "citations": None},
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
            {"type": "tool_result", "tool_use_id": "gone", "content": "42", "is_error": True},
            {"type": "text", "text": "go on"},
        ],
    },
    {"role": "system", "content": [{"type": "text", "text": "Plan mode is on."}]},
    {"role": "assistant", "content": None},
]
# The valid bodies of test_anthropic_translate.py, and Claude Code's shapes.
ANTHROPIC_BODIES = [
    anthropic(system="Be brief."),
    anthropic(
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    ),
    anthropic(
        system=[{"type": "text", "text": BILLING}, {"type": "text", "text": "You are Claude Code."}]
    ),
    anthropic(system=BILLING + "\nYou are Claude Code."),
    anthropic(
        messages=CLAUDE_TURNS,
        stream=True,
        temperature=1,
        thinking={"type": "enabled", "budget_tokens": 31999},
        metadata={"user_id": "u"},
        tools=[
            {
                "name": "count",
                "description": "Count.",
                "input_schema": SCHEMA_2020_12,
                "defer_loading": True,
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "custom", "name": "c", "input_schema": {"type": "object"}},
        ],
    ),
    anthropic(
        temperature=0.5,
        top_k=5,
        stop_sequences=["END"],
        stream=True,
        thinking={"type": "adaptive"},
        output_config={"effort": "high"},
        context_management={"edits": []},
        tool_choice={"type": "none"},
        tools=[{"name": "a", "input_schema": {"type": "object"}}],
    ),
    anthropic(thinking={"type": "disabled"}, tool_choice={"type": "tool", "name": "a"}),
    # images and documents pass the schema: the parser answers "this model reads text only"
    anthropic(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
                    },
                    {"type": "document", "source": {"type": "text", "data": "x"}},
                ],
            }
        ]
    ),
]


@pytest.mark.parametrize("body", ANTHROPIC_BODIES)
def test_anthropic_test_and_client_bodies_validate(body):
    validate_anthropic_messages(body)
    validate_anthropic_messages(
        {k: v for k, v in body.items() if k != "max_tokens"}, count_only=True
    )


CODEX_ITEMS = [
    {
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": "Sandbox: read-only."}],
    },
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "Use ls."}],
        "encrypted_content": None,
    },
    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Plan."}], "content": None},
    {
        "type": "function_call",
        "call_id": "call_1",
        "name": "shell",
        "arguments": '{"command": ["ls"]}',
        "id": "fc_1",
        "status": "completed",
    },
    {"type": "function_call", "call_id": "b", "name": "read", "arguments": ""},
    {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
    {
        "type": "function_call_output",
        "call_id": "b",
        "output": [{"type": "input_text", "text": "x"}],
    },
    {
        "type": "message",
        "role": "assistant",
        "id": "msg_1",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": "One file.", "annotations": []},
            {"type": "refusal", "refusal": "no"},
        ],
    },
    {"role": "user", "content": "thanks"},
    {"role": "system", "content": "late"},
]
# The valid bodies of test_responses_translate.py, and Codex's shapes.
RESPONSES_BODIES = [
    {"input": "hi", "instructions": "Be brief."},
    {
        "input": CODEX_ITEMS,
        "instructions": "You are Codex.",
        "model": "mlx-local",
        "stream": True,
        "store": False,
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "s1",
        "tool_choice": "auto",
        "tools": [
            {
                "type": "function",
                "name": "shell",
                "description": "Run.",
                "strict": False,
                "parameters": {"type": "object", "properties": {"command": {"type": "array"}}},
            },
            {"type": "web_search"},
            {"type": "local_shell"},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
        ],
    },
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
        "metadata": {"k": "v"},
    },
    # passes the schema; the parser explains what it does not support
    {"input": [{"type": "item_reference", "id": "x"}]},
    {"input": "hi", "previous_response_id": "resp_1"},
    {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
]


@pytest.mark.parametrize("body", RESPONSES_BODIES)
def test_responses_test_and_client_bodies_validate(body):
    validate_responses(body)


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
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "read", "arguments": '{"path": "a.txt"}'},
}
# The bodies of test_server_e2e.py, test_openai_sdk.py and test_reasoning.py, and OpenCode's shapes
# (@ai-sdk/openai-compatible).
CHAT_BODIES = [
    chat(max_tokens=200),
    {"messages": HI, "stream": True, "stream_options": {"include_usage": True}},
    {"messages": HI, "tools": TOOLS, "stream": True, "x_mns_script": "x", "tool_choice": "auto"},
    {
        "messages": HI
        + [
            {
                "role": "assistant",
                "content": "Reading.",
                "reasoning_content": "I should.",
                "tool_calls": [CALL],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "text"},
        ],
        "tools": TOOLS,
        "max_tokens": 5,
    },
    {
        "messages": HI
        + [
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "text"},
        ],
        "max_tokens": 5,
    },
    {"messages": HI, "max_tokens": 1e9, "model": "/models/demo"},
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "read "}, {"type": "text", "text": "it"}],
            },
            {"role": "assistant", "content": "x", "reasoning": "r2"},
            {"role": "assistant", "content": "<think>\nr3\n</think>\n\nz"},
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
            {"role": "developer", "content": "late"},
        ],
        "temperature": 0,
        "top_p": 1,
        "stop": "END",
        "seed": 42,
        "chat_template_kwargs": {"x": 1},
    },
    # passes the schema; the parser answers "does not accept images"
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
]


@pytest.mark.parametrize("body", CHAT_BODIES)
def test_chat_test_and_client_bodies_validate(body):
    validate_openai_chat(body)


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
def test_the_translate_tests_bad_anthropic_bodies_get_the_same_words(body, needle):
    """Bodies test_anthropic_translate sees the parser refuse: the schema, which runs
    first, refuses them in words those tests (and clients' users) still recognise."""
    assert needle in refused(validate_anthropic_messages, body).message


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"input": []}, "'input'"),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_the_translate_tests_bad_responses_bodies_get_the_same_words(body, needle):
    assert needle in refused(validate_responses, body).message


# --- the document, and the import ------------------------------------------


def test_openapi_is_json_with_the_four_posts_and_resolvable_refs():
    doc = json.loads(json.dumps(openapi()))
    assert doc["openapi"].startswith("3.1")
    posts = {p for p, ops in doc["paths"].items() if "post" in ops}
    assert posts == {
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
    }
    assert {"/v1/models", "/v1/models/{model}", "/health", "/status", "/metrics"} <= set(
        doc["paths"]
    )
    schemas = doc["components"]["schemas"]
    chat_body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"][
        "application/json"
    ]
    top_k = schemas[chat_body["schema"]["$ref"].rsplit("/", 1)[1]]["properties"]["top_k"]
    assert {"minimum": -1, "maximum": 2**31 - 1}.items() <= top_k["anyOf"][0].items()
    assert set(schemas["OpenAIErrorDetail"]["properties"]) == {"message", "type", "param", "code"}
    assert set(schemas["AnthropicError"]["properties"]) == {"type", "error"}
    stack, refs = [doc], []
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            refs += [node["$ref"]] if "$ref" in node else []
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    assert refs and all(r.split("/")[-1] in schemas for r in refs)


def test_the_boundary_modules_import_without_mlx():
    code = (
        "import sys, mlx_native_server.http.json_body, mlx_native_server.api.schemas.models; "
        "sys.exit(any(m == 'mlx' or m.startswith(('mlx.', 'mlx_lm')) for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
