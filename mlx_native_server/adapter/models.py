"""What models/ needs from mlx-lm: its version, its model classes, its
converter, and loading a model to generate a few tokens.

Every import of mlx-lm here sits inside a function, so importing models/
(the convert and install verbs) stays cheap until mlx-lm is really needed.
"""

from __future__ import annotations

from typing import Any

# The file patterns mlx-lm 0.32 downloads with, for when `allow_patterns`
# cannot read mlx-lm's own list (it moved, or mlx-lm is not importable).
FALLBACK_ALLOW_PATTERNS = [
    "*.json",
    "model*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jsonl",
    "*.jinja",
]


def version() -> str:
    """The installed mlx-lm's version."""
    from mlx_lm import __version__

    return __version__


def allow_patterns() -> list[str]:
    """The file patterns mlx-lm itself downloads a checkpoint with."""
    try:
        from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS
    except ImportError:  # pragma: no cover - moved upstream; keep the 0.32 list
        return list(FALLBACK_ALLOW_PATTERNS)
    return list(DEFAULT_ALLOW_PATTERNS)


def model_classes(config: dict) -> Any:
    """mlx-lm's (Model, ModelArgs) for a config.json; ValueError when this
    mlx-lm has no class for its model_type (the way mlx-lm itself picks)."""
    from mlx_lm.utils import _get_classes

    return _get_classes(config)


def convert(source: str, dest: str, *, quantize: bool, q_bits: int, q_group_size: int) -> None:
    """mlx-lm's converter: the checkpoint at `source` into `dest`, quantized
    at `q_bits` if `quantize`; raises whatever mlx-lm raises."""
    from mlx_lm.convert import convert as mlx_convert

    mlx_convert(source, dest, quantize=quantize, q_bits=q_bits, q_group_size=q_group_size)


def sample(path: str, max_tokens: int) -> str:
    """Load the model at `path` and generate up to `max_tokens` tokens after
    "Hello" (in the chat template, when the tokenizer has one); raises
    whatever mlx-lm raises."""
    from mlx_lm import generate, load

    model, tokenizer = load(path)[:2]  # (model, tokenizer), as return_config is off
    prompt = "Hello"
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hello"}], add_generation_prompt=True
        )
    return generate(model, tokenizer, prompt=prompt, max_tokens=max_tokens)
