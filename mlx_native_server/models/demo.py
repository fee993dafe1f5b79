"""The demo model: a tiny MiniMax-M2-shaped model, made offline
(`python -m mlx_native_server demo`, commands/demo.py, writes it).

The demo model has MiniMax M2's architecture (qk-norm, partial rotary, a
sigmoid-routed mixture of experts) at toy sizes, random weights and a real
byte-level BPE tokenizer (demo_tokenizer.py) carrying MiniMax's added tokens
and chat template, so templating, reasoning and tool-call parsing go through
the same code as with the real model. Its answers mean nothing: it is for
trying the plumbing.

Greedy decoding recites a fixed script (some "reasoning", `</think>`, an
answer, then eos), because the lm_head wires a chain of next tokens on top of
the random weights; sampling mostly follows it. That gives tests and users a
reply with reasoning, content and a natural stop.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from .demo_tokenizer import (
    BASE_VOCAB,
    BOS,
    EOS,
    added_tokens,
    build_tokenizer,
    script_chain,
    tokenizer_files,
)

# Bump when the files written change, so an old demo model is regenerated.
GENERATOR_VERSION = 1
MARKER = "demo-model.json"


@dataclass(frozen=True)
class Sizes:
    """The toy dimensions. head_dim and hidden are 64 so that 4-bit weight
    quantization and the server's 4-bit KV cache (both group size 64) apply."""

    base_vocab: int = BASE_VOCAB
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    rotary_dim: int = 32  # half of head_dim, as MiniMax M2 (64 of 128)
    experts: int = 4
    experts_per_token: int = 2
    intermediate: int = 64


SIZES = Sizes()


# -- weights -----------------------------------------------------------------


# Logit design (see the module docstring). The final RMSNorm sees mostly the
# current token's embedding, so the lm_head acts as a bigram table.
_ALPHA = 12.0  # logit of a scripted next token; random logits are ~N(0, 1)
_BIAS = 4.0  # a constant embedding channel, so rows can push logits down
_SUPPRESS = 3.0  # weight on that channel for added tokens: logit about -11
_RESIDUAL = 0.1  # attention/MoE output scale: prompts nudge, not overturn, the script


def _lm_head(rng, embed, chain: list[int], suppressed: list[int]):
    """Random rows (logits ~N(0, 1)), added tokens pushed far down, and for
    each scripted step prev -> next a row term giving next logit _ALPHA."""
    normed = embed / np.sqrt((embed**2).mean(axis=1, keepdims=True))
    head = rng.standard_normal(embed.shape, dtype=np.float32) / np.sqrt(embed.shape[1])
    head[:, 0] = 0.0
    head[suppressed] = 0.0
    head[suppressed, 0] = -_SUPPRESS
    for prev, nxt in zip(chain, chain[1:], strict=False):  # each step: prev -> next
        d = normed[prev].copy()
        d[0] = 0.0  # leave the bias channel alone: only prev itself matches d
        if head[nxt, 0] < 0:  # a scripted added token (</think>, eos)
            head[nxt] = 0.0
        head[nxt] += _ALPHA * d / (d @ d)
    return head


def _layer_weights(rng, p: str, s: Sizes) -> dict:
    """One decoder layer, Hugging Face names, per-expert w1/w2/w3."""

    def lin(out_dim, in_dim, scale=1.0):
        w = rng.standard_normal((out_dim, in_dim), dtype=np.float32)
        return w * (scale / np.sqrt(in_dim))

    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    w = {
        f"{p}.input_layernorm.weight": np.ones(s.hidden, np.float32),
        f"{p}.post_attention_layernorm.weight": np.ones(s.hidden, np.float32),
        f"{p}.self_attn.q_proj.weight": lin(q, s.hidden),
        f"{p}.self_attn.k_proj.weight": lin(kv, s.hidden),
        f"{p}.self_attn.v_proj.weight": lin(kv, s.hidden),
        f"{p}.self_attn.o_proj.weight": lin(s.hidden, q, _RESIDUAL),
        f"{p}.self_attn.q_norm.weight": np.ones(q, np.float32),
        f"{p}.self_attn.k_norm.weight": np.ones(kv, np.float32),
        f"{p}.block_sparse_moe.gate.weight": lin(s.experts, s.hidden),
        f"{p}.block_sparse_moe.e_score_correction_bias": np.zeros(s.experts, np.float32),
    }
    for e in range(s.experts):
        x = f"{p}.block_sparse_moe.experts.{e}"
        w[f"{x}.w1.weight"] = lin(s.intermediate, s.hidden)
        w[f"{x}.w3.weight"] = lin(s.intermediate, s.hidden)
        w[f"{x}.w2.weight"] = lin(s.hidden, s.intermediate, _RESIDUAL)
    return w


def _weights(tok, seed: int, s: Sizes = SIZES) -> dict:
    """All weights as float32 numpy arrays, Hugging Face names and layout;
    the same seed and tokenizer always give the same arrays."""
    rng = np.random.default_rng(seed)
    vocab = tok.get_vocab_size()
    embed = rng.standard_normal((vocab, s.hidden), dtype=np.float32)
    embed[:, 0] = _BIAS
    suppressed = [tok.token_to_id(t["content"]) for t in added_tokens()]
    w = {"model.embed_tokens.weight": embed, "model.norm.weight": np.ones(s.hidden, np.float32)}
    for i in range(s.layers):
        w.update(_layer_weights(rng, f"model.layers.{i}", s))
    w["lm_head.weight"] = _lm_head(rng, embed, script_chain(tok), suppressed)
    return w


def _stack_experts(weights: dict, s: Sizes) -> dict:
    """Hugging Face per-expert weights -> mlx-lm's switch_mlp layout, as
    mlx-lm's minimax `sanitize` would produce."""
    out = {k: v for k, v in weights.items() if ".experts." not in k}
    names = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
    for i in range(s.layers):
        p = f"model.layers.{i}.block_sparse_moe"
        for hf, mlx in names.items():
            experts = [weights[f"{p}.experts.{e}.{hf}.weight"] for e in range(s.experts)]
            out[f"{p}.switch_mlp.{mlx}.weight"] = np.stack(experts)
    return out


def _save_safetensors(file: Path, weights: dict, layout: str) -> None:
    """MLX layout in float32: mlx's CPU backend runs the experts' gather_mm
    in float32 only. Hugging Face layout in bfloat16, as MiniMax ships, with
    the router bias in float32 as upstream."""
    import mlx.core as mx

    def cast(k, v):
        keep = layout == "mlx" or k.endswith("e_score_correction_bias")
        return mx.array(v) if keep else mx.array(v).astype(mx.bfloat16)

    arrays = {k: cast(k, v) for k, v in weights.items()}
    mx.save_safetensors(str(file), arrays, metadata={"format": "mlx" if layout == "mlx" else "pt"})


# -- files -------------------------------------------------------------------


def _model_config(tok, model_type: str, s: Sizes = SIZES) -> dict:
    """config.json: MiniMax M2's settings with the toy sizes."""
    return {
        "architectures": ["MiniMaxM2ForCausalLM"],
        "model_type": model_type,
        "vocab_size": tok.get_vocab_size(),
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "head_dim": s.head_dim,
        "rotary_dim": s.rotary_dim,
        "partial_rotary_factor": s.rotary_dim / s.head_dim,
        "num_local_experts": s.experts,
        "num_experts_per_tok": s.experts_per_token,
        "shared_intermediate_size": 0,
        "scoring_func": "sigmoid",
        "use_routing_bias": True,
        "use_qk_norm": True,
        "qk_norm_type": "per_layer",
        "hidden_act": "silu",
        "rms_norm_eps": 1e-06,
        "rope_theta": 5000000,
        "max_position_embeddings": 196608,
        "tie_word_embeddings": False,
        "bos_token_id": tok.token_to_id(BOS),
        "eos_token_id": tok.token_to_id(EOS),
        "torch_dtype": "float32" if model_type == "minimax" else "bfloat16",
    }


def _write_checkpoint(dest: Path, seed: int, layout: str) -> None:
    """Everything but the marker: config, weights, tokenizer files."""
    tok = build_tokenizer()
    weights = _weights(tok, seed)
    if layout == "mlx":
        weights = _stack_experts(weights, SIZES)
    config = _model_config(tok, "minimax" if layout == "mlx" else "minimax_m2")
    generation = {  # MiniMax's recommended sampling, with the demo's token ids
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": config["eos_token_id"],
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 0.95,
        "top_k": 40,
    }
    _save_safetensors(dest / "model.safetensors", weights, layout)
    files = {
        "config.json": json.dumps(config, indent=2),
        "generation_config.json": json.dumps(generation, indent=2),
    }
    for name, text in {**files, **tokenizer_files(tok)}.items():
        (dest / name).write_text(text, encoding="utf-8")


def _marker(seed: int, layout: str) -> dict:
    return {
        "generator": "mlx_native_server.models.demo",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "layout": layout,
        "sizes": asdict(SIZES),
        "about": "A generated demo model with random weights: its output is random "
        "text (greedy decoding recites one fixed reply). For trying the plumbing only.",
    }


def _is_current(path: Path, seed: int, layout: str) -> bool:
    try:
        found = json.loads((path / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    files = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return found == _marker(seed, layout) and all((path / f).is_file() for f in files)


def _write_dir(path: Path, seed: int, layout: str, force: bool) -> tuple[Path, bool]:
    """Make `path` hold the checkpoint; (path, whether it was written).

    Writes into a temp dir beside `path`, then swaps it in, so a half-written
    model never sits at `path`. Refuses to replace a non-demo directory.
    """
    path = Path(path).resolve()
    if not force and _is_current(path, seed, layout):
        return path, False
    if path.exists() and any(path.iterdir()) and not (path / MARKER).exists():
        raise UserError(
            f"{path} exists and is not a demo model; choose another --path or remove it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write_checkpoint(tmp, seed, layout)
        # The marker goes last: its presence means the rest is complete.
        (tmp / MARKER).write_text(json.dumps(_marker(seed, layout), indent=2), encoding="utf-8")
        if path.exists():  # directories cannot be renamed over: move the old one aside
            path.rename(tmp.with_name(tmp.name + "-old"))
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp.with_name(tmp.name + "-old"), ignore_errors=True)
    return path, True


def generate(path: Path, *, seed: int = 0, force: bool = False, progress: Callable = print) -> Path:
    """Make sure `path` holds the MLX demo model for `seed`; return its path.

    Returns at once if it already does (same generator version and seed)
    unless `force`. Raises UserError rather than replace a directory that is
    not a demo model. Takes well under a second.
    """
    start = time.monotonic()
    out, wrote = _write_dir(path, seed, "mlx", force)
    if wrote:
        progress(f"wrote the demo model to {out} in {time.monotonic() - start:.1f}s")
    else:
        progress(f"the demo model is already at {out}")
    return out


def write_hf_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """The same model in Hugging Face layout (bfloat16, per-expert w1/w2/w3,
    model_type minimax_m2): input for `mlx_lm.convert`, which quantizes it at
    any of the usual bit widths with group size 64. Idempotent like `generate`."""
    return _write_dir(path, seed, "hf", force=False)[0]


BANNER = """\
The demo model is a tiny MiniMax-M2-shaped model with random weights: its
answers are random text (greedy decoding recites one fixed reply). It is for
trying the server's plumbing only."""
