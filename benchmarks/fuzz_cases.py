"""What benchmarks/fuzz_server.py sends: bodies shaped like real clients',
mutated at every field, raw HTTP framing abuse, and slow clients. Pure and
stdlib only: a Case is bytes plus what the answer must look like.

Seeds (small max_tokens so a body that stays valid generates briefly):
OpenCode's OpenAI chat body with tools and a tool round-trip, Claude Code's
Anthropic body with tools and thinking, Codex's Responses body, and a
count_tokens body.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHAT, MSGS, COUNT, RESP = (
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
)

_READ_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "filePath": {"type": "string", "description": "The path to read"},
        "offset": {"type": "number"},
        "limit": {"type": "number"},
    },
    "required": ["filePath"],
    "additionalProperties": False,
}
OPENCODE = {
    "model": "mlx-local",
    "messages": [
        {
            "role": "system",
            "content": "You are opencode, an interactive CLI tool for software engineering.",
        },
        {
            "role": "user",
            "content": [{"type": "text", "text": "Read a.txt and tell me what it says."}],
        },
        {
            "role": "assistant",
            "content": "Reading it.",
            "reasoning_content": "I should read the file.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"filePath": "a.txt"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "hello from a.txt"},
        {"role": "user", "content": "Thanks. Summarise it in one line."},
    ],
    "tools": [
        {
            "type": "function",
            "function": {"name": "read", "description": "Read a file.", "parameters": _READ_SCHEMA},
        },
        {
            "type": "function",
            "function": {
                "name": "bash",
                "description": "Run a command.",
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
                    "required": ["command"],
                },
            },
        },
    ],
    "tool_choice": "auto",
    "temperature": 0.7,
    "top_p": 0.95,
    "max_tokens": 8,
    "stream": True,
    "stream_options": {"include_usage": True},
}
CLAUDE_CODE = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 8,
    "system": [
        {
            "type": "text",
            "text": "You are Claude Code, Anthropic's official CLI for Claude.",
            "cache_control": {"type": "ephemeral"},
        }
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is in a.txt?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should read it.", "signature": "c2lnbmF0dXJl"},
                {"type": "text", "text": "Reading it."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "Read",
                    "input": {"file_path": "a.txt"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "hello from a.txt"},
                {"type": "text", "text": "Summarise it.", "cache_control": {"type": "ephemeral"}},
            ],
        },
    ],
    "tools": [
        {
            "name": "Read",
            "description": "Reads a file from the local filesystem.",
            "input_schema": {
                "type": "object",
                "properties": {"file_path": {"type": "string"}, "limit": {"type": "number"}},
                "required": ["file_path"],
                "additionalProperties": False,
            },
        }
    ],
    "thinking": {"type": "adaptive"},
    "metadata": {"user_id": "user_0123_session_4567"},
    "temperature": 1,
    "stream": True,
}
CODEX = {
    "model": "mlx-local",
    "instructions": "You are Codex, a coding agent running in a terminal.",
    "input": [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "List the files."}],
        },
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Run ls."}]},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "shell",
            "arguments": '{"command": ["ls"]}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt\nb.txt"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "shell",
            "description": "Runs a shell command.",
            "strict": False,
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                "required": ["command"],
            },
        }
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "max_output_tokens": 8,
}
COUNT_TOKENS = {
    k: v for k, v in CLAUDE_CODE.items() if k in ("model", "system", "messages", "tools")
}
SEEDS: dict[str, tuple[str, dict]] = {
    "opencode": (CHAT, OPENCODE),
    "claude-code": (MSGS, CLAUDE_CODE),
    "codex": (RESP, CODEX),
    "count-tokens": (COUNT, COUNT_TOKENS),
}
NORMAL = (
    CHAT,
    {"model": "mlx-local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
)


@dataclass(frozen=True)
class Case:
    """One thing to send. `well_formed`: valid HTTP, so the server must answer;
    `slow`: how to send it ("" all at once, "drip" a byte at a time, "stall"
    part of it, then nothing)."""

    kind: str  # "json", "framing" or "slow"
    name: str
    data: bytes
    path: str  # decides the error shape; "" when there is no usable path
    well_formed: bool
    head: bool = False
    slow: str = ""


def request(
    method: str,
    path: str,
    host: str,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    length: bool = True,
) -> bytes:
    head = [("Host", host), *(headers or [])]
    if length and (body or method in ("POST", "PUT", "PATCH")):
        head.append(("Content-Length", str(len(body))))
    lines = "".join(f"{k}: {v}\r\n" for k, v in head)
    return f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode("latin-1") + body


def json_request(path: str, host: str, body: bytes) -> bytes:
    return request("POST", path, host, body, [("Content-Type", "application/json")])


# --- JSON mutations ------------------------------------------------------------


class Raw:
    """A JSON literal written as is (NaN, a 5,000-digit integer, 1e309, ...)."""

    def __init__(self, text: str):
        self.text = text


SPECIAL_TEXT = [
    "",
    " ",
    "\u0000",
    "\ud800",
    "\udfff",
    "a\ud800b",
    "\u202e",
    "\ufeff",
    "🙂" * 500,
    "]~!b[",
    "[e~[",
    "]!d~[",
    "<think>",
    "</think>",
    "<minimax:tool_call>",
    "{{ raise }}",
    "\r\n\r\nGET /status HTTP/1.1\r\n\r\n",
    "%s%n",
    "../../../../etc/passwd",
]
NUMBERS = [0, -1, 1, -0.0, 0.5, 2**31 - 1, 2**31, 2**63, 2**64, -(2**63), 1e308, -1e308, 1e-320]
RAW_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e309",
    "-1e309",
    "9" * 5000,
    "-" + "9" * 5000,
    "1" + "0" * 400,
    "0." + "0" * 5000 + "1",
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
]
TYPES = [0, 1.5, "text", True, False, [], {}, None, [1, "a", None], {"a": 1}]


def _huge_string(rng: random.Random) -> str:
    # Mostly cheap to tokenize; now and then a megabyte.
    return rng.choice("ab🙂\u00e9 x") * rng.choice(
        [10_000, 10_000, 10_000, 100_000, 100_000, 1_000_000]
    )


def _deep(rng: random.Random) -> Raw:
    n = rng.choice([200, 1000, 10_000, 100_000])
    return Raw("[" * n + "]" * n) if rng.random() < 0.5 else Raw('{"a":' * n + "1" + "}" * n)


VALUE_MUTATIONS: dict[str, Callable[[random.Random, Any], Any]] = {
    "null": lambda rng, v: None,
    "wrong-type": lambda rng, v: rng.choice([t for t in TYPES if type(t) is not type(v)]),
    "number": lambda rng, v: rng.choice(NUMBERS),
    "raw-number": lambda rng, v: Raw(rng.choice(RAW_NUMBERS)),
    "huge-string": lambda rng, v: _huge_string(rng),
    "special-text": lambda rng, v: rng.choice(SPECIAL_TEXT),
    "surrogate": lambda rng, v: (
        (v if isinstance(v, str) else "x") + rng.choice(["\ud800", "\udbff\udbff"])
    ),
    "deep": lambda rng, v: _deep(rng),
    "big-array": lambda rng, v: [rng.choice([0, "a", {}, None])] * rng.choice([1000, 50_000]),
    "empty": lambda rng, v: type(v)() if isinstance(v, (str, list, dict)) else 0,
}


def field_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into `value` (keys and indices), the containers' included."""
    out = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in items:
        out.append(prefix + (key,))
        out.extend(field_paths(child, prefix + (key,)))
    return out


def _label(path: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".") or "$"


def encode(body: Any) -> bytes:
    """JSON with Raw literals spliced in as written."""
    raws: list[str] = []

    def swap(v):
        if isinstance(v, Raw):
            raws.append(v.text)
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(body))
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', raw, 1)
    return text.encode("utf-8", "surrogatepass")


def mutate_value(body: dict, rng: random.Random) -> str:
    """Mutate one field of `body` in place; returns a label for the report."""
    path = rng.choice(field_paths(body))
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    op = rng.choice(["delete", *VALUE_MUTATIONS]) if rng.random() < 0.9 else "extra-key"
    if op == "delete":
        del parent[key]
    elif op == "extra-key" and isinstance(parent, dict):
        parent[rng.choice(["", "__proto__", "x" * 1000, "\ud800", "model ", "MAX_TOKENS"])] = (
            rng.choice(TYPES)
        )
    else:
        op = "null" if op == "extra-key" else op
        parent[key] = VALUE_MUTATIONS[op](rng, parent[key])
    return f"{_label(path)}:{op}"


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Damage the encoded body itself."""
    op = rng.choice(["truncate", "random-bytes", "garbage", "not-object", "duplicate-key", "bom"])
    if op == "truncate":
        return data[: rng.randrange(len(data))], op
    if op == "random-bytes":
        at = rng.randrange(len(data) + 1)
        return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:], op
    if op == "garbage":
        return rng.randbytes(rng.choice([1, 100, 10_000])), op
    if op == "not-object":
        return rng.choice([b"[]", b"null", b'"text"', b"1", b"true", b"", b" ", b"{}"]), op
    if op == "duplicate-key":
        return data[:-1] + b', "model": [], "stream": "yes"}', op
    return b"\xef\xbb\xbf" + data, op


def json_case(rng: random.Random, host: str) -> Case:
    name, (path, seed) = rng.choice(list(SEEDS.items()))
    body = copy.deepcopy(seed)
    labels = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not field_paths(body):
            break
        labels.append(mutate_value(body, rng))
    data = encode(body)
    if rng.random() < 0.15:
        data, op = mutate_bytes(data, rng)
        labels.append(op)
    return Case("json", f"{name}:{','.join(labels)}", json_request(path, host, data), path, True)


# --- HTTP framing abuse -----------------------------------------------------------

SMUGGLED = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _framing(host: str) -> list[tuple[str, bytes, str, bool, bool]]:
    """(name, bytes, path, well_formed, head) for every framing case."""
    body = encode(NORMAL[1])
    j = [("Content-Type", "application/json")]
    bad = [  # malformed HTTP: an answer is optional, a 5xx is not
        ("garbage-line", b"GARBAGE\r\n\r\n"),
        ("no-version", b"GET /health\r\n\r\n"),
        ("http-9", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("binary-line", bytes(range(256)) + b"\r\n\r\n"),
        ("blank-lines", b"\r\n\r\n\r\n"),
        ("lowercase-method", b"get /health HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("header-no-colon", b"GET /health HTTP/1.1\r\nHost x\r\n\r\n"),
        ("space-before-colon", b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("obs-fold", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
        ("nul-in-header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
        ("nul-in-path", b"GET /hea\x00lth HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("two-hosts", b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        (
            "cl-and-te",
            request(
                "POST",
                CHAT,
                host,
                b"0\r\n\r\n" + SMUGGLED,
                j + [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
                length=False,
            ),
        ),
        (
            "two-content-lengths",
            request(
                "POST",
                CHAT,
                host,
                body,
                j + [("Content-Length", str(len(body))), ("Content-Length", "3")],
                length=False,
            ),
        ),
        (
            "negative-length",
            request("POST", CHAT, host, body, j + [("Content-Length", "-1")], length=False),
        ),
        (
            "text-length",
            request("POST", CHAT, host, body, j + [("Content-Length", "ten")], length=False),
        ),
        (
            "plus-length",
            request(
                "POST", CHAT, host, body, j + [("Content-Length", f"+{len(body)}")], length=False
            ),
        ),
        (
            "te-xchunked",
            request(
                "POST",
                CHAT,
                host,
                b"0\r\n\r\n",
                j + [("Transfer-Encoding", "xchunked")],
                length=False,
            ),
        ),
        (
            "bad-chunk-size",
            request(
                "POST",
                CHAT,
                host,
                b"zz\r\n{}\r\n0\r\n\r\n",
                j + [("Transfer-Encoding", "chunked")],
                length=False,
            ),
        ),
        (
            "huge-chunk-size",
            request(
                "POST",
                CHAT,
                host,
                b"ffffffffffffffff\r\n{}\r\n0\r\n\r\n",
                j + [("Transfer-Encoding", "chunked")],
                length=False,
            ),
        ),
    ]
    good = [  # well-formed HTTP: the server must answer, in the path's shape
        ("head-health", request("HEAD", "/health", host), "/health", True),
        ("head-models", request("HEAD", "/v1/models", host), "/v1/models", True),
        *[
            (f"{m.lower()}-{p}", request(m, p, host), p, False)
            for m in ("PATCH", "TRACE", "PUT", "DELETE", "FOO")
            for p in (CHAT, MSGS)
        ],
        (
            "options-preflight",
            request(
                "OPTIONS",
                CHAT,
                host,
                headers=[
                    ("Origin", "https://evil.example"),
                    ("Access-Control-Request-Method", "POST"),
                ],
            ),
            CHAT,
            False,
        ),
        ("get-chat", request("GET", CHAT, host), CHAT, False),
        ("unknown-path", request("GET", "/nope", host), "/nope", False),
        ("dot-dot-path", request("GET", "/../../etc/passwd", host), "/etc/passwd", False),
        ("percent-path", request("GET", "/v1/%zz%00", host), "/v1/", False),
        ("absolute-uri", request("GET", f"http://{host}/health", host), "/health", False),
        ("smuggle-404", request("POST", "/nope", host, SMUGGLED, j), "/nope", False),
        ("smuggle-405", request("PUT", CHAT, host, SMUGGLED, j), CHAT, False),
        ("smuggle-messages", request("POST", "/v1/messages/nope", host, SMUGGLED, j), MSGS, False),
        (
            "length-0-with-bytes",
            request("POST", CHAT, host, headers=j + [("Content-Length", "0")]) + SMUGGLED,
            CHAT,
            False,
        ),
        (
            "big-header-64k",
            request("GET", "/v1/models", host, headers=[("X-Fill", "a" * 65536)]),
            "/v1/models",
            False,
        ),
        (
            "many-headers",
            request("GET", "/v1/models", host, headers=[(f"X-{i}", "v") for i in range(2000)]),
            "/v1/models",
            False,
        ),
        ("url-9k", request("GET", "/v1/models?q=" + "a" * 9000, host), "/v1/models", False),
        ("url-64k", request("GET", "/v1/models?q=" + "a" * 65536, host), "/v1/models", False),
        (
            "body-too-large",
            request(
                "POST", MSGS, host, headers=j + [("Content-Length", str(10**12))], length=False
            ),
            MSGS,
            False,
        ),
        (
            "text-plain",
            request("POST", CHAT, host, body, [("Content-Type", "text/plain")]),
            CHAT,
            False,
        ),
        ("no-content-type", request("POST", MSGS, host, body), MSGS, False),
        ("evil-host", request("GET", "/v1/models", "evil.example"), "/v1/models", False),
        (
            "evil-origin",
            json_request(CHAT, host, body).replace(
                b"\r\n\r\n", b"\r\nOrigin: https://evil.example\r\n\r\n", 1
            ),
            CHAT,
            False,
        ),
        ("http-1.0", b"GET /health HTTP/1.0\r\n\r\n", "/health", False),
    ]
    return [(n, d, "", False, False) for n, d in bad] + [(n, d, p, True, h) for n, d, p, h in good]


def framing_case(rng: random.Random, host: str) -> Case:
    name, data, path, well_formed, head = rng.choice(_framing(host))
    return Case("framing", name, data, path, well_formed, head)


def slow_case(rng: random.Random, host: str) -> Case:
    """A client that sends its headers a byte at a time, or stops part-way
    through the headers or the body (the server may close it, or answer 408)."""
    body = encode(NORMAL[1])
    full = json_request(CHAT, host, body)
    how, data = rng.choice(
        [
            ("drip", full),
            ("stall", full[: len(full) - len(body) - 10]),  # inside the headers
            ("stall", json_request(CHAT, host, body)[: -len(body) // 2]),  # half the body
            (
                "stall",
                request(
                    "POST",
                    MSGS,
                    host,
                    b'{"model": ',
                    [("Content-Type", "application/json"), ("Content-Length", "100")],
                    length=False,
                ),
            ),
        ]
    )
    return Case(
        "slow", f"slow-{how}", data, MSGS if b" /v1/messages " in data else CHAT, False, slow=how
    )


def warmup_cases(host: str) -> list[Case]:
    """The largest bodies the fuzz sends, and one that fills the context:
    sent before RSS is first read, so the allocator and mlx reach their
    high-water marks then, and growth afterwards is a leak, not a first big body."""
    out = []
    for name, (path, seed) in SEEDS.items():
        for big in ("🙂" * 1_000_000, "a" * 1_000_000, _deep(random.Random(1)), ["a"] * 50_000):
            body = copy.deepcopy(seed)
            if path == RESP:
                body["input"] = big
            else:
                body["messages"].append({"role": "user", "content": big})
            out.append(
                Case("json", f"warmup:{name}", json_request(path, host, encode(body)), path, True)
            )
    full = {
        **NORMAL[1],
        "messages": [{"role": "user", "content": "word " * 600}],
        "max_tokens": 200,
    }
    out.append(
        Case("json", "warmup:full-context", json_request(CHAT, host, encode(full)), CHAT, True)
    )
    return out


def cases(rng: random.Random, host: str, slow_share: float = 0.01, framing_share: float = 0.2):
    """An endless stream of cases: mostly JSON mutations, some framing, a few slow."""
    while True:
        roll = rng.random()
        if roll < slow_share:
            yield slow_case(rng, host)
        elif roll < slow_share + framing_share:
            yield framing_case(rng, host)
        else:
            yield json_case(rng, host)
