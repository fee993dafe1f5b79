"""The generated demo models the benchmarks run on, and the forced reply they
make the server spell (bench_overhead.py, bench_concurrency.py, bench_kv_decode.py).

`tiny` is the test fixture (2 layers, 64 wide): its per-token work is
negligible. `wide` is MiniMax-shaped at 1024 wide, 4 layers and 8 experts, so
the model's own work per token is no longer negligible next to the server's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlx.core as mx

from mlx_native_server.core import blas
from mlx_native_server.models import demo as dm
from mlx_native_server.models import demo_tokenizer

WIDE = dm.Sizes(
    hidden=1024,
    layers=4,
    heads=16,
    kv_heads=4,
    head_dim=64,
    rotary_dim=32,
    experts=8,
    experts_per_token=2,
    intermediate=1024,
)
SIZES = {"tiny": dm.SIZES, "wide": WIDE}
FILLER = (
    "The local server answers requests from editors, agents and command-line tools; "
    "each request carries messages, tools and settings, and the response streams "
    "tokens back until the model stops. "
)


def write_demo(dest: Path, sizes: dm.Sizes) -> Path:
    """A demo-model checkpoint at `sizes` (random weights, the demo tokenizer)."""
    if sizes == dm.SIZES:
        return dm.generate(dest, progress=lambda *a: None)
    dest.mkdir(parents=True, exist_ok=True)
    tok = demo_tokenizer.build_tokenizer()
    weights = dm._stack_experts(dm._weights(tok, 0, sizes), sizes)
    dm._save_safetensors(dest / "model.safetensors", weights, "mlx")
    files = {
        "config.json": json.dumps(dm._model_config(tok, "minimax", sizes), indent=2),
        **demo_tokenizer.tokenizer_files(tok),
    }
    for name, text in files.items():
        (dest / name).write_text(text, encoding="utf-8")
    return dest


def demo_model(tmp: Path, name: str) -> tuple[Path, str]:
    """The demo model `name` ("tiny" or "wide") written under `tmp`, and its label."""
    sizes = SIZES[name]
    return write_demo(tmp / name, sizes), f"demo-{name} (h{sizes.hidden} x{sizes.layers})"


def ints(text: str) -> list[int]:
    """A comma-separated list of whole numbers (an argparse type)."""
    return [int(x) for x in text.split(",") if x]


PREFILL_STEP = 2048  # tokens a prefill forward, as the server's prefill_step_size


def random_ids(vocab: int, n: int, seed: int) -> mx.array:
    """n token ids drawn by `seed`, away from the vocabulary's ends (its special tokens)."""
    return mx.random.randint(8, vocab - 300, (n,), key=mx.random.key(seed))


def prefill(model, tokens: mx.array, cache: list) -> mx.array:
    """Run (B, n) tokens into `cache` in PREFILL_STEP chunks, each evaluated
    (one forward of a long prompt fails in mlx's CUDA graph code); the last
    chunk's logits."""
    for start in range(0, tokens.shape[1], PREFILL_STEP):
        logits = model(tokens[:, start : start + PREFILL_STEP], cache=cache)
        mx.eval([c.state for c in cache])
    return logits


def add_model_flags(p) -> None:
    """--model and --demo, as the engine benchmarks take them (model_or_demo)."""
    p.add_argument("--model", type=Path, help="an MLX model directory (default: a generated demo)")
    p.add_argument(
        "--demo", choices=["tiny", "wide"], default="wide", help="without --model [%(default)s]"
    )


def model_or_demo(model: Path | None, tmp: Path, demo: str) -> tuple[Path, str]:
    """The model a benchmark measures: `model` if given, else the demo model `demo`."""
    return (model.resolve(), model.name) if model else demo_model(tmp, demo)


def forced_reply(tokenizer, n_tokens: int) -> str:
    """'x</think>' then filler text of at least n_tokens tokens (the reply
    starts inside reasoning; the tag moves the rest to content)."""
    text = "x</think>"
    while len(tokenizer.encode(text, add_special_tokens=False)) < n_tokens:
        text += FILLER
    return text


def same_blas_as_the_server() -> None:
    """Run on the BLAS the server loads (core/blas.py: a system OpenBLAS on
    Linux CPU, where one is installed): re-executes this process once with it
    preloaded, so the engine measured in-process and every server started
    from here (they inherit LD_PRELOAD, a baseline checkout's too) compare alike."""
    blas.preload(os.environ.get("MLX_NATIVE_SERVER_CPU_BLAS", "auto"))
