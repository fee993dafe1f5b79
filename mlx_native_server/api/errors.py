"""Errors over HTTP: one exception, shaped as the client's API expects.

OpenAI clients read `{"error": {"message", "type", "code"}}`; Anthropic
clients read `{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

from typing import Any

# OpenAI error type -> Anthropic error type
_ANTHROPIC_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "not_found_error": "not_found_error",
    "server_error": "api_error",
    "service_unavailable": "api_error",
    "overloaded_error": "overloaded_error",
    "request_too_large": "request_too_large",
    "timeout_error": "timeout_error",
}
# Anthropic names its error types by status; these win over the mapping above.
_ANTHROPIC_BY_STATUS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}


def flavor_of(path: str) -> str:
    """The error shape a path's clients read: Anthropic's under /v1/messages."""
    return "anthropic" if path.startswith("/v1/messages") else "openai"


class ApiError(Exception):
    """An error answered to the client with `status` (never a traceback)."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param=param)


def error_body(error: ApiError, flavor: str) -> dict[str, Any]:
    """The JSON body for `error` in the shape of `flavor` ('openai' or 'anthropic')."""
    if flavor == "anthropic":
        return {
            "type": "error",
            "error": {
                "type": _ANTHROPIC_BY_STATUS.get(error.status)
                or _ANTHROPIC_TYPES.get(error.type, error.type),
                "message": error.message,
            },
        }
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


def context_overflow(limit: int, prompt_tokens: int, flavor: str) -> ApiError:
    """The context-overflow error each client recognises and compacts on."""
    if flavor == "anthropic":
        return ApiError(400, f"prompt is too long: {prompt_tokens} tokens > {limit} maximum")
    return ApiError(
        400,
        f"This model's maximum context length is {limit} tokens. However, your "
        f"messages resulted in {prompt_tokens} tokens.",
        code="context_length_exceeded",
        param="messages",
    )


# Light type checks used by every front end.


def expect(
    body: dict,
    name: str,
    types: type | tuple,
    *,
    required: bool = False,
    default: Any = None,
    where: str = "",
) -> Any:
    """body[name] if it has one of `types`, else a 400 naming the field."""
    if name not in body or body[name] is None:
        if required:
            raise bad_request(f"'{where}{name}' is required.", param=name)
        return default
    value = body[name]
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        raise bad_request(
            f"'{where}{name}' must be {names}, got {type(value).__name__}.", param=name
        )
    return value


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}


def optional_array(value: Any, name: str) -> list | None:
    """An optional array field: None, or a list; anything else is a 400."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad_request(f"'{name}' must be an array.", param=name)
    return value


def expect_number(
    body: dict, name: str, *, low: float | None = None, high: float | None = None
) -> float | None:
    value = expect(body, name, (int, float))
    if value is None:
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise bad_request(f"'{name}' must be {bounds}, got {value}.", param=name)
    return value
