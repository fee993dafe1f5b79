"""Cache-safe prompts: drop volatile lines so identical conversations give
identical tokens.

The prefix cache only helps when a request's prompt starts with the same
tokens as an earlier one. Some clients put a line into the system prompt
that changes on every request, which moves the first differing token to
the very start and turns every request into a full prefill (vllm-mlx PR
#277 measured 50 s -> 3.65 s per Claude Code request once it was gone).

Rules (applied to system text only, so user content is never rewritten):

- `claude-code-billing`: Claude Code 2.x starts its system prompt with
  `x-anthropic-billing-header: cc_version=…; cc_entrypoint=…; cch=…;`,
  a per-request hash meant for Anthropic's billing, meaningless to a model.

Once a rule removed a line, blank lines left at the start or end of that
system text are trimmed too, so "billing line + prompt" as one string and
as separate text blocks normalise to the same text.

Forms that clients switch between without changing meaning (a system turn
as a string or as one text block; `cache_control` markers moving from block
to block) are made equal by the front ends' translators, which join text
blocks the same way whatever their markers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VolatileLine:
    name: str
    pattern: re.Pattern
    why: str


VOLATILE_LINES: tuple[VolatileLine, ...] = (
    VolatileLine(
        "claude-code-billing",
        re.compile(r"^\s*x-anthropic-billing-header:.*$", re.IGNORECASE),
        "Claude Code's per-request billing hash (cc_version, cch)",
    ),
)


def strip_volatile(text: str) -> str:
    """`text` without the lines any VOLATILE_LINES rule matches."""
    lines = text.split("\n")
    kept = [line for line in lines if not any(r.pattern.match(line) for r in VOLATILE_LINES)]
    if len(kept) == len(lines):
        return text
    return "\n".join(kept).strip("\n")


def clean_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Template-form messages with volatile lines dropped from system turns.

    Runs before system turns are hoisted (reasoning.hoist_system), so it sees
    every system turn whatever its position. Returns new dicts where changed.
    """
    out = []
    for m in messages:
        if m.get("role") == "system" and isinstance(m.get("content"), str):
            cleaned = strip_volatile(m["content"])
            if cleaned != m["content"]:
                m = {**m, "content": cleaned}
        out.append(m)
    return out
