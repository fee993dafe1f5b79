"""Declared request bodies of the four POST endpoints, checked at the boundary.

The HTTP layer calls `validate_openai_chat`, `validate_anthropic_messages`
or `validate_responses` on the parsed body before the endpoint's parser
(api/openai/chat, api/anthropic/translate, api/responses/translate) runs, and passes the
same dict on. The models mirror what those parsers read, with the types
they accept; what they ignore is left out, and unknown fields are allowed
(clients send many). Ranges are the engine's (schemas/types.py): a value
outside them would crash a sampler inside mlx-lm and take the engine down
with it. Free-form parts (tool JSON schemas, tool-call arguments) stay
plain objects. The chat and Messages models are here, the Responses ones in
responses.py. Pure: stdlib and pydantic only, no mlx.

The unions (`tagged`, `content_of`) are built at run time, which mypy cannot
follow: under TYPE_CHECKING each is `Any`, and pydantic reads the real one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from .errors import api_error
from .responses import ResponsesRequest
from .types import (
    AnyKind,
    Arguments,
    MinP,
    Open,
    PositiveInt,
    Seed,
    Stop,
    Temperature1,
    Temperature2,
    ToolChoice,
    TopK,
    TopP,
    WholeCount,
    content_of,
    tagged,
)


def effective_seed(value: int | None) -> int | None:
    """The seed for the engine: -1 (llama.cpp clients' "random") is no seed."""
    return None if value is None or value == -1 else value


def effective_top_k(value: int | None) -> int | None:
    """The top_k for the engine: -1 (llama.cpp clients' "off") is 0, which is off."""
    return 0 if value == -1 else value


# --- OpenAI chat completions -------------------------------------------------


class ChatTextPart(Open):
    type: Literal["text", "input_text", "output_text"]
    text: str


ChatPart = tagged(
    {
        "<string>": str,
        "<text>": ChatTextPart,
        "<input_text>": ChatTextPart,
        "<output_text>": ChatTextPart,
        "<object>": AnyKind,
    },
    "a string or a content part",
)
if TYPE_CHECKING:
    ChatContent = Any
else:
    ChatContent = content_of(ChatPart, "text parts")


class ChatFunctionCall(Open):
    name: str
    arguments: Arguments | None = None


class ChatToolCall(Open):
    id: Any = None
    function: ChatFunctionCall


class ChatMessage(Open):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: ChatContent = None
    reasoning_content: ChatContent = None
    reasoning: ChatContent = None
    tool_calls: list[ChatToolCall] | None = None
    tool_call_id: Any = None


class ChatFunction(Open):
    name: str
    parameters: dict[str, Any] | None = None


class ChatTool(Open):
    function: ChatFunction


class ChatCompletionRequest(Open):
    """POST /v1/chat/completions: the fields the server reads (others are ignored)."""

    model: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    n: int | None = None
    max_tokens: WholeCount | None = None
    max_completion_tokens: WholeCount | None = None
    temperature: Temperature2 | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    tools: list[ChatTool] | None = None
    tool_choice: ToolChoice | None = None
    chat_template_kwargs: dict[str, Any] | None = None


# --- Anthropic Messages ------------------------------------------------------


class TextBlock(Open):
    type: Literal["text"]
    text: str


InnerBlock = tagged({"<text>": TextBlock, "<object>": AnyKind}, "a content block (an object)")
if TYPE_CHECKING:
    ResultContent = Any
else:
    ResultContent = content_of(InnerBlock, "content blocks")


class ThinkingBlock(Open):
    type: Literal["thinking"]
    thinking: str | None = None


class ToolUseBlock(Open):
    type: Literal["tool_use"]
    id: str | None = None
    name: str
    input: dict[str, Any] | None = None


class ToolResultBlock(Open):
    type: Literal["tool_result"]
    tool_use_id: str
    content: ResultContent = None


Block = tagged(
    {
        "<text>": TextBlock,
        "<thinking>": ThinkingBlock,
        "<tool_use>": ToolUseBlock,
        "<tool_result>": ToolResultBlock,
        "<object>": AnyKind,
    },
    "a content block (an object)",
)
if TYPE_CHECKING:
    Blocks = Any
else:
    Blocks = content_of(Block, "content blocks")


class AnthropicMessage(Open):
    role: Literal["user", "assistant", "system"]
    content: Blocks = None


class CustomTool(Open):
    type: Literal["custom"] | None = None
    name: str
    input_schema: dict[str, Any] | None = None


class ServerTool(Open):
    """A server-side tool (web_search_…, bash_…): left out, the model cannot see its schema."""

    type: str


if TYPE_CHECKING:
    AnthropicTool = Any
else:
    AnthropicTool = tagged(
        {"<custom>": CustomTool, "<object>": ServerTool},
        "a tool definition (an object)",
        untyped="<custom>",
    )


class AnthropicToolChoice(Open):
    type: Literal["auto", "any", "tool", "none"]


class Thinking(Open):
    type: Literal["enabled", "adaptive", "disabled"]


class AnthropicCountTokensRequest(Open):
    """POST /v1/messages/count_tokens: the fields the server reads (others are ignored)."""

    model: str | None = None
    messages: Annotated[list[AnthropicMessage], Field(min_length=1)]
    system: Blocks = None
    max_tokens: PositiveInt | None = None
    temperature: Temperature1 | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: Thinking | None = None


class AnthropicMessagesRequest(AnthropicCountTokensRequest):
    """POST /v1/messages: the fields the server reads (others are ignored)."""

    max_tokens: PositiveInt


# --- Entry points ------------------------------------------------------------


def _validate(model: type[BaseModel], body: dict) -> None:
    try:
        model.model_validate(body)
    except ValidationError as e:
        raise api_error(e.errors(include_url=False)[0]) from None


def validate_openai_chat(body: dict) -> None:
    """A chat completions body, or ApiError(400) naming the first bad field (`param`)."""
    _validate(ChatCompletionRequest, body)


def validate_anthropic_messages(body: dict, *, count_only: bool = False) -> None:
    """A Messages body (count_tokens: `count_only`, max_tokens optional), or ApiError(400)."""
    _validate(AnthropicCountTokensRequest if count_only else AnthropicMessagesRequest, body)


def validate_responses(body: dict) -> None:
    """A Responses body, or ApiError(400) naming the first bad field (`param`)."""
    _validate(ResponsesRequest, body)
