"""Declared request body of POST /v1/responses (OpenAI Responses), checked at
the boundary by models.py's `validate_responses`.

The models mirror what api/responses/translate reads, as models.py's do for
the other endpoints: unknown fields allowed, ranges the engine's
(schemas/types.py). Input items are typed by `type`, or are messages when
they carry only a `role`; hosted tools (web_search, …) are accepted and left
out. Under TYPE_CHECKING the unions built at run time are `Any`. Pure:
stdlib and pydantic only, no mlx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import Field

from .types import (
    AnyKind,
    Arguments,
    Open,
    PositiveInt,
    Temperature2,
    ToolChoice,
    TopP,
    content_of,
    tagged,
    union,
)

TextPartType = Literal["input_text", "output_text", "text", "summary_text", "reasoning_text"]
TEXT_PARTS: tuple[str, ...] = get_args(TextPartType)


class ResponsesTextPart(Open):
    type: TextPartType
    text: str


class RefusalPart(Open):
    type: Literal["refusal"]
    refusal: str


ResponsesPart = tagged(
    {
        **{f"<{k}>": ResponsesTextPart for k in TEXT_PARTS},
        "<refusal>": RefusalPart,
        "<object>": AnyKind,
    },
    "a content part (an object)",
)
if TYPE_CHECKING:
    ResponsesContent = Any
else:
    ResponsesContent = content_of(ResponsesPart, "content parts")


class MessageItem(Open):
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: ResponsesContent = None


class SummaryPart(Open):
    text: str = ""


class ReasoningItem(Open):
    type: Literal["reasoning"]
    content: ResponsesContent = None
    summary: list[SummaryPart] | None = None


class FunctionCallItem(Open):
    type: Literal["function_call"]
    name: str
    arguments: Arguments | None = None


class FunctionCallOutputItem(Open):
    type: Literal["function_call_output"]
    output: ResponsesContent = None


def _item_tag(item: Any) -> str | None:
    """Items are typed by `type`, or are messages when they only have a `role`."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type") or ("message" if "role" in item else None)
    return (
        f"<{kind}>"
        if kind in ("message", "reasoning", "function_call", "function_call_output")
        else "<object>"
    )


Item = union(
    {
        "<message>": MessageItem,
        "<reasoning>": ReasoningItem,
        "<function_call>": FunctionCallItem,
        "<function_call_output>": FunctionCallOutputItem,
        "<object>": AnyKind,
    },
    _item_tag,
    "an input item (an object)",
)


class FunctionTool(Open):
    type: Literal["function"]
    name: str
    parameters: dict[str, Any] | None = None


class OtherTool(Open):
    """web_search, custom, local_shell, …: left out, this server runs no hosted tools."""


if TYPE_CHECKING:
    ResponsesTool = Any
    ResponsesInput = Any
else:
    ResponsesTool = tagged(
        {"<function>": FunctionTool, "<object>": OtherTool}, "a tool definition (an object)"
    )
    ResponsesInput = tagged(
        {"<string>": str, "<array>": Annotated[list[Item], Field(min_length=1)]},
        "a string or a non-empty array of items",
    )


class ResponsesRequest(Open):
    """POST /v1/responses: the fields the server reads (others are ignored). Stateless:
    send the whole conversation in `input`."""

    model: str | None = None
    input: ResponsesInput
    instructions: str | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature2 | None = None
    top_p: TopP | None = None
    stream: bool | None = None
    prompt_cache_key: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, Any] | None = None
