"""Pydantic's validation errors -> one ApiError in plain words. Pure.

A client reads `'top_p' must be a number greater than 0 and at most 1,
got 0.` with `param: "top_p"`, not pydantic's dump of every union branch.
Fields that carry a phrase (schema_types) fail with an "expected" error;
the rest are named by their type.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic_core import ErrorDetails

from ..errors import ApiError

_BY_TYPE = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "none_required": "null",
    "finite_number": "a finite number",
}


def api_error(error: ErrorDetails) -> ApiError:
    """The 400 for one pydantic error (`ValidationError.errors()[0]`): the
    field as `messages[0].content` in the message and `messages.0.content`
    in `param`; `<tag>` steps of tagged unions are left out."""
    keys = [k for k in error["loc"] if not (isinstance(k, str) and k.startswith("<"))]
    if not keys:
        return ApiError(
            400, f"The request body must be a JSON object, got {shown(error['input'])}."
        )
    field, param = _spelled(keys)
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        message = f"'{field}' is required."
    else:
        message = (
            f"'{field}' must be {_wanted(kind, ctx, error['msg'])}, got {shown(error['input'])}."
        )
    return ApiError(400, message, "invalid_request_error", param=param)


def _wanted(kind: str, ctx: dict, fallback: str) -> str:
    if kind == "expected":  # ours: the phrase is the message (schemas' unions carry no context)
        return ctx.get("phrase") or fallback
    if kind == "literal_error":
        return ctx["expected"]
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "a non-empty array"
    return _BY_TYPE.get(kind) or fallback[:1].lower() + fallback[1:]


def _spelled(keys: list) -> tuple[str, str]:
    field = ""
    for key in keys:
        field += f"[{key}]" if isinstance(key, int) else (f".{key}" if field else str(key))
    return _escaped(field), _escaped(".".join(str(k) for k in keys))


def shown(value: Any) -> str:
    """A short, loggable rendering of a value in an error message."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return ("-Infinity" if value < 0 else "Infinity") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        digits = str(value)
        return digits if len(digits) <= 24 else f"an integer of {len(digits)} digits"
    if isinstance(value, str):
        return _escaped(
            json.dumps(value if len(value) <= 40 else value[:37] + "...", ensure_ascii=False)
        )
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _escaped(text: str) -> str:
    """Lone surrogates as \\udXXX escapes: the message goes to the log and to JSON."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
