"""Building blocks of the request schemas (schemas.py). Pure.

Every field whose type alone does not say what is wanted (a range, a union)
carries the phrase its error message uses: `'top_p' must be {phrase}`. A
failure inside such a field is one custom error of type "expected" (see
schema_errors), not pydantic's dump of every union branch.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

MAX_TOP_K = 2**31 - 1  # a top_k at or past the vocabulary is "no top-k": the engine clamps it
MAX_SEED = 2**64 - 1  # mlx.random.seed takes an unsigned 64-bit integer


class Open(BaseModel):
    """An object whose unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)


class AnyKind(Open):
    """A part or block of another type (image, document, …): the endpoint answers
    400 for what this text-only model cannot read."""

    type: str


def expecting(phrase: str) -> WrapValidator:
    """Field metadata: any failure of the field reads "'field' must be {phrase}"."""

    def check(value: Any, handler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("expected", "{phrase}", {"phrase": phrase}) from None

    return WrapValidator(check)


def number(*, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Any:
    """A finite JSON number (not a boolean, not a string) within the bounds."""
    if ge is not None:
        phrase = f"a number from {ge} to {le}"
    else:
        phrase = f"a number greater than {gt} and at most {le}"
    return Annotated[float, Field(gt=gt, ge=ge, le=le, allow_inf_nan=False), expecting(phrase)]


def union(by: dict[str, Any], tag, phrase: str) -> Any:
    """A union whose branch `tag(value)` picks (one branch's errors, not
    every branch's); no branch is "`field` must be {phrase}". Tags are
    written `<name>` so that error paths can drop them (schema_errors)."""
    branches = tuple(Annotated[t, Tag(name)] for name, t in by.items())
    # `Union[tuple]`: the branches are a run-time tuple, which `X | Y` cannot spell.
    return Annotated[
        Union[branches],  # noqa: UP007
        Discriminator(tag, custom_error_type="expected", custom_error_message=phrase),
    ]


def tagged(by: dict[str, Any], phrase: str, *, untyped: str = "<object>") -> Any:
    """A union by JSON kind (`<string>`, `<array>`, `<null>`), objects by their
    `type` (`<text>`, …, `<object>` for other types, `untyped` for none)."""

    def tag(value: Any) -> str | None:
        name: str | None
        if isinstance(value, dict):
            kind = value.get("type")
            name = untyped if kind is None else f"<{kind}>" if isinstance(kind, str) else "<object>"
            name = name if name in by else "<object>"
        else:
            name = (
                "<null>"
                if value is None
                else "<string>"
                if isinstance(value, str)
                else "<array>"
                if isinstance(value, list)
                else None
            )
        return name if name in by else None

    return union(by, tag, phrase)


def content_of(part: Any, parts: str) -> Any:
    """Content that is a string, null or an array of `part`."""
    return tagged(
        {"<string>": str, "<array>": list[part], "<null>": None},
        f"a string, null or an array of {parts}",
    )


# Ranges (every float is also finite: no NaN, no Infinity).
Temperature2 = number(ge=0, le=2)
Temperature1 = number(ge=0, le=1)
TopP = number(gt=0, le=1)
MinP = number(ge=0, le=1)
TopK = Annotated[
    int,
    Field(ge=-1, le=MAX_TOP_K, description="0 or -1: no top-k."),
    expecting(f"an integer from 0 to {MAX_TOP_K} (or -1 for none)"),
]
Seed = Annotated[
    int,
    Field(ge=-1, le=MAX_SEED, description="-1: a random seed."),
    expecting(f"an integer from 0 to {MAX_SEED} (or -1 for a random seed)"),
]
PositiveInt = Annotated[int, Field(ge=1), expecting("an integer of at least 1")]
# OpenAI chat also takes a whole float (100.0); counts past the context are clamped.
WholeCount = Annotated[
    float,
    Field(ge=1, multiple_of=1, allow_inf_nan=False),
    expecting("a whole number of at least 1"),
]
Stop = Annotated[str | list[str], expecting("a string or an array of strings")]
Arguments = Annotated[str | dict[str, Any], expecting("a JSON string or an object")]
ToolChoice = Annotated[str | dict[str, Any], expecting("a string or an object")]
