"""Request bodies from bytes to a dict: the one way the server parses them.

`json.loads` alone lets through what later crashes a handler or the engine:
NaN and Infinity literals, numbers too big to use (a 5,000-digit integer
trips Python's int-conversion limit, `1e309` becomes inf), nesting deep
enough for a RecursionError, and lone surrogates (`"\\ud800"`), which no
UTF-8 writer (the log, the tokenizer, a JSON reply) can encode. Each is a
400 here, before any handler sees the body. Pure: stdlib only.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..api.errors import ApiError

MAX_DEPTH = 128  # nesting levels; real clients stay below ~20 (tool schemas)
MAX_INT_DIGITS = 40  # 2**64 has 20 digits; anything longer is no count or id we use
# A surrogate can only come from a \uD800-\uDFFF escape: the bytes were strict
# UTF-8, so the text walk is skipped for bodies without one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_json_body(raw: bytes) -> dict:
    """`raw` as a JSON object, or ApiError(400) saying what is wrong with it.

    Refused: invalid UTF-8, invalid JSON (with where), NaN/Infinity,
    integers over MAX_INT_DIGITS digits, floats that overflow, nesting over
    MAX_DEPTH, strings (keys too) with lone surrogates (naming their path,
    e.g. `messages[0].content`), and a top level that is not an object.
    """
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM is tolerated, as json.loads(bytes) does
    except UnicodeDecodeError as e:
        raise ApiError(
            400,
            f"The request body is not valid UTF-8 (byte {e.start}); send JSON encoded as UTF-8.",
        ) from None
    if not text.strip():
        raise ApiError(400, "The request body is empty; send a JSON object.")
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_int=_int, parse_float=_float
        )
    except json.JSONDecodeError as e:
        raise ApiError(
            400,
            f"Invalid JSON in request body: {e.msg} at line {e.lineno} "
            f"column {e.colno} (char {e.pos}).",
        ) from None
    except RecursionError:  # the C scanner's own limit (~1000 levels)
        raise _too_deep() from None
    if not isinstance(value, dict):
        raise ApiError(400, f"The request body must be a JSON object, got {_kind(value)}.")
    _walk(value, check_text=_SURROGATE_ESCAPE.search(text) is not None)
    return value


def _refuse_constant(name: str) -> Any:
    raise ApiError(
        400,
        f"Invalid JSON in request body: {name} is not a JSON number; send a finite number or null.",
    )


def _int(digits: str) -> int:
    n = len(digits) - digits.startswith("-")
    if n > MAX_INT_DIGITS:
        raise ApiError(
            400,
            f"The request body has an integer of {n} digits; at most "
            f"{MAX_INT_DIGITS} are accepted.",
        )
    return int(digits)


def _float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        shown = literal if len(literal) <= 40 else literal[:37] + "..."
        raise ApiError(
            400,
            f"The request body has the number {shown}, which is too large "
            "to represent; send a finite number.",
        )
    return value


def _too_deep() -> ApiError:
    return ApiError(400, f"The request body nests deeper than {MAX_DEPTH} levels.")


def _walk(body: dict, check_text: bool) -> None:
    """Depth (and, if `check_text`, lone surrogates) of everything in `body`,
    with an explicit stack of (node, depth, parent entry): the path is only
    spelled out for an error. json.loads makes exact dicts and lists."""
    stack: list[tuple[Any, int, Any]] = [(body, 1, None)]
    while stack:
        entry = stack.pop()
        node, depth, _ = entry
        if check_text:
            _check_text(entry)
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                if depth >= MAX_DEPTH:
                    raise _too_deep()
                stack.append((child, depth + 1, entry))


def _check_text(entry: tuple) -> None:
    node = entry[0]
    for key, child in node.items() if type(node) is dict else enumerate(node):
        if type(key) is str and _has_surrogate(key) or type(child) is str and _has_surrogate(child):
            raise _bad_text(_keys(entry) + [key])


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _keys(entry: tuple) -> list:
    """The keys from the body down to `entry`'s node (found by identity in each parent)."""
    keys = []
    while entry[2] is not None:
        node, _, parent = entry
        pairs = parent[0].items() if type(parent[0]) is dict else enumerate(parent[0])
        keys.append(next(k for k, v in pairs if v is node))
        entry = parent
    return keys[::-1]


def _bad_text(keys: list) -> ApiError:
    shown, dotted = "", []
    for key in keys:
        if isinstance(key, int):
            shown += f"[{key}]"
            dotted.append(str(key))
            continue
        key = _escaped(key)
        shown += (f".{key}" if shown else key) if _IDENTIFIER.match(key) else f'["{key}"]'
        dotted.append(key)
    return ApiError(
        400,
        f"'{shown}' is not valid Unicode text (it has a lone surrogate "
        "escape such as \\ud800); send text that encodes as UTF-8.",
        param=".".join(dotted),
    )


def _escaped(text: str) -> str:
    """`text` with lone surrogates as \\udXXX escapes, so a message about it can be logged."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
