"""Cache-safe prompts: volatile lines dropped, equivalent forms made equal
(issue 5: Claude Code's billing header defeated every prefix cache)."""

from __future__ import annotations

import pytest

from mlx_native_server.api.anthropic.translate import translate_messages
from mlx_native_server.api.openai.chat import parse_chat
from mlx_native_server.api.prompt_normalize import clean_messages, strip_volatile

BILLING = "x-anthropic-billing-header: cc_version=2.1.12.{v}; cc_entrypoint=cli; cch={h};"
PROMPT = "You are Claude Code, Anthropic's official CLI for Claude.\n\nBe careful."


def billing(n: int) -> str:
    return BILLING.format(v=f"a{n}", h=f"{n:05d}")


def test_billing_line_dropped_and_seam_trimmed():
    assert strip_volatile(billing(1) + "\n\n" + PROMPT) == PROMPT
    assert strip_volatile(PROMPT + "\n" + billing(1)) == PROMPT


def test_text_without_volatile_lines_is_untouched():
    text = "\n  keep my leading blank line\nand x-anthropic-billing-header inside a line\n"
    assert strip_volatile(text) == text


def test_only_system_turns_are_cleaned():
    msgs = [
        {"role": "system", "content": billing(1) + "\n" + PROMPT},
        {"role": "user", "content": billing(2)},
    ]
    assert clean_messages(msgs) == [
        {"role": "system", "content": PROMPT},
        {"role": "user", "content": billing(2)},
    ]


def test_openai_chat_front_end_is_cleaned_too():
    body = {
        "messages": [
            {"role": "system", "content": billing(3) + "\n" + PROMPT},
            {"role": "user", "content": "hi"},
        ]
    }
    request, _, _ = parse_chat(body)
    assert request.messages[0] == {"role": "system", "content": PROMPT}


@pytest.fixture(scope="module")
def tokenizer(demo_model):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(demo_model)


def _tokens(tokenizer, system) -> list[int]:
    messages = translate_messages(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], system
    )
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)


def test_requests_differing_only_in_the_billing_line_give_identical_tokens(tokenizer):
    """Claude Code sends the billing header as its own first system block, a new hash each time."""
    first = _tokens(
        tokenizer, [{"type": "text", "text": billing(1)}, {"type": "text", "text": PROMPT}]
    )
    second = _tokens(
        tokenizer,
        [
            {"type": "text", "text": billing(2)},
            {"type": "text", "text": PROMPT, "cache_control": {"type": "ephemeral"}},
        ],
    )
    as_string = _tokens(tokenizer, billing(3) + "\n" + PROMPT)
    without = _tokens(tokenizer, PROMPT)
    assert first == second == as_string == without
