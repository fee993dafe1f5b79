#!/usr/bin/env python3
"""What checking a request body costs: `parse_json_body` (json_body.py) and
`validate_*` (schemas.py) on realistic ~200 KB agent bodies, against plain
`json.loads`, in CPU ms per body (median of --rounds).

    .venv/bin/python benchmarks/bench_validation.py
    .venv/bin/python benchmarks/bench_validation.py --kb 400 --rounds 50

The bodies are shaped like what the three agent clients send late in a
session: Claude Code (Anthropic Messages: system blocks, ~20 tools with long
descriptions, thinking / tool_use / tool_result turns), OpenCode (chat
completions: the same conversation with reasoning_content and tool_calls)
and Codex (Responses: developer message, reasoning, function_call and
function_call_output items). Pure CPU work, no server, no mlx.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_native_server.api.schemas.models import (
    validate_anthropic_messages,
    validate_openai_chat,
    validate_responses,
)
from mlx_native_server.http.json_body import parse_json_body

PROSE = (
    "The local server answers requests from editors, agents and command-line tools; each "
    "request carries messages, tools and settings, and the response streams back. "
)
CODE = "def handler(request):\n    body = parse(request)\n    return respond(body, status=200)\n"


def tool_schema(i: int) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Absolute path of the file."},
            "offset": {"type": "integer", "minimum": 0, "description": "Line to start at."},
            "limit": {"type": "integer", "exclusiveMinimum": 0},
            "mode": {"type": "string", "enum": ["read", "write", "append"]},
            "edits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "old_string": {"type": "string"},
                        "new_string": {"type": "string"},
                        "replace_all": {"type": "boolean", "default": False},
                    },
                    "required": ["old_string", "new_string"],
                    "additionalProperties": False,
                },
            },
            f"option_{i}": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["path"],
        "additionalProperties": False,
    }


def turns(kb: int):
    """(thinking, text, tool name, tool input, tool output) until about `kb` KB."""
    size, i = 0, 0
    while size < kb * 1000 * 0.6:  # tools and system take the rest
        out = (CODE * (8 + i % 12)) + PROSE * (i % 3)
        turn = (
            f"I should look at file {i}. " + PROSE[: 80 + i % 200],
            f"Reading file {i}.",
            f"tool_{i % 20}",
            {"path": f"/src/project/module_{i}.py", "offset": i, "limit": 200},
            out,
        )
        size += sum(len(json.dumps(x)) for x in turn)
        i += 1
        yield turn


def claude_code_body(kb: int) -> dict:
    tools = [
        {"name": f"tool_{i}", "description": PROSE * 12, "input_schema": tool_schema(i)}
        for i in range(20)
    ]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>" + PROSE * 5 + "</system-reminder>"},
                {"type": "text", "text": "Fix the bug."},
            ],
        }
    ]
    for n, (thinking, text, name, args, out) in enumerate(turns(kb)):
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": thinking, "signature": "EqQBCkYIBxgCKkD" * 8},
                    {"type": "text", "text": text},
                    {"type": "tool_use", "id": f"toolu_{n:024d}", "name": name, "input": args},
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{n:024d}", "content": out}
                ],
            }
        )
    messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": True,
        "temperature": 1,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.12; cch=1;"},
            {"type": "text", "text": PROSE * 60, "cache_control": {"type": "ephemeral"}},
        ],
        "messages": messages,
        "tools": tools,
        "metadata": {"user_id": "user_abc_session_1"},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
    }


def opencode_body(kb: int) -> dict:
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": PROSE * 12,
                "parameters": tool_schema(i),
            },
        }
        for i in range(20)
    ]
    messages = [
        {"role": "system", "content": PROSE * 60},
        {"role": "user", "content": "Fix the bug."},
    ]
    for n, (thinking, text, name, args, out) in enumerate(turns(kb)):
        messages.append(
            {
                "role": "assistant",
                "content": text,
                "reasoning_content": thinking,
                "tool_calls": [
                    {
                        "id": f"call_{n}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": f"call_{n}", "content": out})
    return {
        "model": "mlx-local",
        "messages": messages,
        "tools": tools,
        "tool_choice": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 32000,
        "temperature": 0.7,
        "top_p": 0.95,
    }


def codex_body(kb: int) -> dict:
    tools = [
        {
            "type": "function",
            "name": f"tool_{i}",
            "description": PROSE * 12,
            "strict": False,
            "parameters": tool_schema(i),
        }
        for i in range(20)
    ] + [{"type": "web_search"}]
    items = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": PROSE * 20}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Fix the bug."}],
        },
    ]
    for n, (thinking, _text, name, args, out) in enumerate(turns(kb)):
        items += [
            {
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": thinking}],
                "content": None,
                "encrypted_content": None,
            },
            {
                "type": "function_call",
                "name": name,
                "arguments": json.dumps(args),
                "call_id": f"call_{n}",
            },
            {"type": "function_call_output", "call_id": f"call_{n}", "output": out},
        ]
    return {
        "model": "mlx-local",
        "instructions": PROSE * 40,
        "input": items,
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
    }


def median_ms(fn, rounds: int) -> float:
    """Median CPU time of `fn` on this thread: load from other processes on a
    shared machine does not count, the work itself does."""
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t = time.thread_time()
        fn()
        times.append((time.thread_time() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kb", type=int, default=200, help="body size to build (default 200)")
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    header = ("body", "KB", "json.loads", "parse_json_body", "(\\u escapes)", "validate_*")
    print(
        f"{header[0]:<26}{header[1]:>4}{header[2]:>12}{header[3]:>17}{header[4]:>20}{header[5]:>12}"
        f"   ms per body, median of {args.rounds}"
    )
    for name, build, validate in (
        ("Claude Code /v1/messages", claude_code_body, validate_anthropic_messages),
        ("OpenCode /chat/completions", opencode_body, validate_openai_chat),
        ("Codex /v1/responses", codex_body, validate_responses),
    ):
        body = build(args.kb)
        raw = json.dumps(body, ensure_ascii=False).encode()
        # Python clients escape non-ASCII (ensure_ascii): an emoji becomes a surrogate-pair escape,
        # which switches on the string walk for lone surrogates.
        escaped = json.dumps({**body, "emoji": "\N{GRINNING FACE}"}).encode()
        # median_ms calls each lambda at once, in this iteration: binding the loop variables is safe
        loads = median_ms(lambda: json.loads(raw), args.rounds)  # noqa: B023
        parse = median_ms(lambda: parse_json_body(raw), args.rounds)  # noqa: B023
        parse_esc = median_ms(lambda: parse_json_body(escaped), args.rounds)  # noqa: B023
        check = median_ms(lambda: validate(body), args.rounds)  # noqa: B023
        print(
            f"{name:<26}{len(raw) // 1000:>4}{loads:>12.2f}{parse:>17.2f}{parse_esc:>20.2f}{check:>12.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
