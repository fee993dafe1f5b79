"""Every mlx-lm name and signature the adapter relies on, checked in seconds.

`CONTRACT` is one table: each row names an upstream module and attribute
and what the adapter does with it (calls it with these parameters, reads an
attribute its instances set, patches a global upstream calls by name, or
hands upstream an object of ours whose attributes upstream reads; checks.py
holds these kinds of row). `problems()` checks the table against the mlx-lm
that imports, and says in one sentence per row what moved, so a new mlx-lm
fails here, by name, and not at request time:

    python -m mlx_native_server.adapter.contract     # exit 1 and the list, or 0

./setup-mlx-lm-repo.sh runs it against each build before installing it.
This module and checks.py import nothing from mlx-lm or the rest of the
package at import time, so they still run when the adapter itself no longer
imports.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .checks import Attr, Call, Global, Importer, Reads, Uses

# Every `cli_args.<name>` mlx_lm/server.py reads: the fields of the argparse
# Namespace adapter/server.py builds (tests/test_upstream_contract.py checks
# that _cli_args sets exactly these).
CLI_ARGS = (
    "model",
    "adapter_path",
    "draft_model",
    "num_draft_tokens",
    "trust_remote_code",
    "chat_template",
    "use_default_chat_template",
    "chat_template_args",
    "pipeline",
    "decode_concurrency",
    "prompt_concurrency",
    "prefill_step_size",
    "prompt_cache_size",
    "prompt_cache_bytes",
    "kv_bits",
    "kv_group_size",
    "quantized_kv_start",
    "max_tokens",
    "temp",
    "top_p",
    "top_k",
    "min_p",
    "allowed_origins",
)
# Every `self.prompt_cache.<name>` mlx_lm/server.py uses: what cache.store's
# PromptCacheStore provides in place of upstream's LRUPromptCache.
PROMPT_CACHE = ("fetch_nearest_cache", "insert_cache", "trim_to", "nbytes", "stats_by_type")

S, G, C, B = "mlx_lm.server", "mlx_lm.generate", "mlx_lm.models.cache", "mlx_lm.models.base"
T, L = "mlx_lm.tokenizer_utils", "mlx_lm.models.switch_layers"

CONTRACT: tuple[Any, ...] = (
    # adapter/server.py: the engine
    Attr("mlx_lm", "__version__"),
    Call(S, "ModelProvider", kwargs=("cli_args",)),
    Attr(S, "ModelProvider.model", instance=True),
    Attr(S, "ModelProvider.tokenizer", instance=True),
    Attr(S, "ModelProvider.is_distributed", instance=True),
    Reads(S, r"\bcli_args\.(\w+)", CLI_ARGS, "the Namespace of adapter/server.py (_cli_args)"),
    Call(S, "ResponseGenerator", kwargs=("model_provider", "prompt_cache")),
    Call(S, "ResponseGenerator._tokenize", args=("tokenizer", "request", "args")),
    Uses(
        S,
        "ResponseGenerator._serve_single",
        "self._tokenize(",
        "the context cap and memory guard of _Generator._tokenize",
    ),
    Uses(
        S,
        "ResponseGenerator._generate",
        "self._tokenize(",
        "the context cap and memory guard of _Generator._tokenize",
    ),
    Attr(S, "ResponseGenerator.prompt_cache", instance=True),
    Reads(S, r"\bself\.prompt_cache\.(\w+)", PROMPT_CACHE, "cache.store.PromptCacheStore"),
    Call(
        S,
        "ResponseGenerator.generate",
        args=("request", "generation_args"),
        kwargs=("progress_callback",),
    ),
    Call(S, "ResponseGenerator._await_response", args=("response_queue",)),
    Attr(S, "ResponseGenerator.requests", instance=True),
    Uses(
        S,
        "ResponseGenerator._generate",
        "rqueue, request, args = request",
        "Upstream._queue puts (queue, request, args) on ResponseGenerator.requests",
    ),
    Uses(
        S,
        "ResponseGenerator._serve_single",
        "rqueue.put((tokens_processed, tokens_total))",
        "the scheduler keeps the progress protocol of the one-request path",
    ),
    Call(S, "ResponseGenerator.generation_available"),
    Call(S, "ResponseGenerator.stop_and_join"),
    Call(S, "ResponseGenerator.join"),
    Call(
        S,
        "CompletionRequest",
        kwargs=("request_type", "prompt", "messages", "tools", "role_mapping"),
    ),
    Call(
        S,
        "GenerationArguments",
        kwargs=(
            "model",
            "sampling",
            "logits",
            "stop_words",
            "max_tokens",
            "num_draft_tokens",
            "logprobs",
            "top_logprobs",
            "seed",
            "chat_template_kwargs",
        ),
    ),
    Call(S, "ModelDescription", kwargs=("model", "draft", "adapter")),
    Call(
        S,
        "SamplingArguments",
        kwargs=("temperature", "top_p", "top_k", "min_p", "xtc_probability", "xtc_threshold"),
    ),
    Call(
        S,
        "LogitsProcessorArguments",
        kwargs=(
            "logit_bias",
            "repetition_penalty",
            "repetition_context_size",
            "presence_penalty",
            "presence_context_size",
            "frequency_penalty",
            "frequency_context_size",
        ),
    ),
    # adapter/scheduler.py, sequence.py, decode.py: our loop in place of _generate
    Attr(S, "ResponseGenerator._stop", instance=True),
    Attr(S, "ResponseGenerator._is_distributed", instance=True),
    Attr(S, "ResponseGenerator.cli_args"),
    Call(S, "ResponseGenerator._next_request", args=("timeout",)),
    Call(S, "ResponseGenerator._make_state_machine", args=("model_key", "tokenizer", "stop_words")),
    Call(S, "ResponseGenerator._serve_single", args=("request", "stream")),
    Attr(S, "ModelProvider.is_batchable", instance=True),
    Attr(S, "ModelProvider.model_key", instance=True),
    Call(S, "ModelProvider.load_default"),
    Call(S, "ModelProvider.reset"),
    Call(S, "_image_parts", args=("messages",)),
    Call(S, "_make_sampler", args=("args", "tokenizer")),
    Call(S, "_make_logits_processors", args=("args",)),
    Call(
        S,
        "GenerationContext",
        kwargs=(
            "has_tool_calling",
            "has_thinking",
            "tool_parser",
            "text_sm",
            "initial_state",
            "prompt",
            "prompt_cache_count",
        ),
    ),
    Call(S, "Response", args=("text", "token", "logprob", "finish_reason", "top_tokens")),
    *(
        Attr(T, f"TokenizerWrapper.{name}")
        for name in ("has_tool_calling", "has_thinking", "tool_parser", "eos_token_ids")
    ),
    Attr(T, "TokenizerWrapper.detokenizer"),
    Call(T, "StreamingDetokenizer.add_token", args=("token",)),
    Call(T, "StreamingDetokenizer.finalize"),
    Attr(T, "StreamingDetokenizer.last_segment"),
    Call(G, "StopSequences.matcher"),
    Call(G, "StopSequences.Matcher.advance", args=("token",)),
    Call(G, "wired_limit", args=("model", "streams")),
    Call(
        G,
        "maybe_quantize_kv_cache",
        args=("prompt_cache", "quantized_kv_start", "kv_group_size", "kv_bits"),
    ),
    Call(C, "make_prompt_cache", args=("model",)),
    # adapter/batch_kv.py: batched caches, full precision and quantized
    Attr(C, "_BaseCache"),
    Call(C, "BatchKVCache", args=("left_padding",)),
    Call(C, "BatchKVCache.merge", args=("caches",)),
    Call(C, "BatchKVCache.extend", args=("other",)),
    Call(C, "BatchKVCache.filter", args=("batch_indices",)),
    Call(C, "BatchKVCache.extract", args=("idx",)),
    *(
        Attr(C, f"BatchKVCache.{name}", instance=True)
        for name in ("keys", "values", "offset", "left_padding", "_idx")
    ),
    Call(C, "KVCache.to_quantized", kwargs=("group_size", "bits")),
    Call(B, "create_causal_mask", args=("N",), kwargs=("offset", "left_padding")),
    Uses(
        B,
        "scaled_dot_product_attention",
        'hasattr(cache, "bits")',
        "BatchQuantizedKVCache takes the quantized attention path by its `bits`",
    ),
    # adapter/cuda_attention.py: the fused batched decode attention on CUDA
    Global(
        "mlx_lm.models.minimax",
        "scaled_dot_product_attention",
        caller="MiniMaxAttention.__call__",
        args=("queries", "keys", "values", "cache", "scale", "mask"),
    ),
    Uses(
        C,
        "BatchKVCache.make_mask",
        "left_padding=self.left_padding",
        "cuda_attention starts row b at left_padding[b], where the mask starts it",
    ),
    # adapter/cuda_experts.py: a decode step's experts on CUDA
    Call(L, "SwitchGLU.__call__", args=("x", "indices")),
    *(
        Attr(L, f"SwitchGLU.{name}", instance=True)
        for name in ("gate_proj", "up_proj", "down_proj", "activation")
    ),
    *(
        Attr(L, f"QuantizedSwitchLinear.{name}", instance=True)
        for name in ("biases", "bits", "group_size", "mode")
    ),
    Uses(
        L,
        "QuantizedSwitchLinear._quantize",
        "self.weight, self.scales, *biases = mx.quantize(",
        "the kernels read an expert's rows from weight, scales and biases as mx.quantize lays them",
    ),
    Uses(
        L,
        "SwitchGLU.__call__",
        "do_sort = indices.size >= 64",
        "cuda_experts takes the calls mlx-lm leaves unsorted (SORTED_FROM)",
    ),
    Uses(L, "SwiGLU.__call__", "swiglu(gate, x)", "the gate_up kernel is silu(gate) * up"),
    Uses(
        "mlx_lm.models.activations",
        "swiglu",
        "nn.silu(gate) * x",
        "the gate_up kernel is silu(gate) * up",
    ),
    Uses(
        "mlx_lm.models.minimax",
        "MiniMaxSparseMoeBlock.__call__",
        "self.switch_mlp(x, inds)",
        "MiniMax's experts are the SwitchGLU that cuda_experts replaces the call of",
    ),
    # adapter/run.py: one request's GenerationContext and Responses
    Attr(S, "GenerationContext"),
    *(
        Attr(S, f"GenerationContext.{name}", instance=True)
        for name in (
            "prompt",
            "prompt_cache_count",
            "tool_parser",
            "text_sm",
            "initial_state",
            "_should_stop",
        )
    ),
    Call(S, "GenerationContext.stop"),
    Attr(S, "Response.text", instance=True),
    Attr(S, "Response.finish_reason", instance=True),
    Call(G, "TextStateMachine.make_state", args=("initial",)),
    Call(G, "TextStateMachine.split", args=("state", "text")),
    Call(G, "TextStateMachine.flush", args=("state",)),
    Call(G, "TextStateMachine.discard", args=("state",)),
    # adapter/patches.py: the two module globals
    Global(S, "stream_generate", caller="ResponseGenerator._serve_single"),
    Attr(G, "GenerationResponse.logprobs", instance=True),
    Uses(
        S,
        "ResponseGenerator._serve_single",
        "gen.logprobs[gen.token].item()",
        "_NoLogprob stands in for exactly that use of a token's logprobs",
    ),
    Global(S, "_make_logits_processors", caller="ResponseGenerator._serve_single", args=("args",)),
    Global(S, "_make_logits_processors", caller="ResponseGenerator._generate", args=("args",)),
    # adapter/kv.py: the KV cache
    Call(C, "QuantizedKVCache", kwargs=("group_size", "bits")),
    Call(C, "QuantizedKVCache.update_and_fetch", args=("keys", "values")),
    Attr(C, "KVCache"),
    *(
        Attr(C, f"{cls}.{name}", instance=True)
        for cls in ("KVCache", "QuantizedKVCache")
        for name in ("keys", "values", "offset")
    ),
    Attr(C, "KVCache.state"),
    Attr(C, "KVCache.nbytes"),
    Call(C, "can_trim_prompt_cache", args=("cache",)),
    Call(C, "trim_prompt_cache", args=("cache", "num_tokens")),
    Call(C, "load_prompt_cache", args=("file_name",), kwargs=("return_metadata",)),
    Call(C, "save_prompt_cache", args=("file_name", "cache", "metadata")),
    Call(
        B,
        "scaled_dot_product_attention",
        args=("queries", "keys", "values"),
        kwargs=("cache", "scale", "mask"),
    ),
    # adapter/models.py: loading, sampling, converting (DEFAULT_ALLOW_PATTERNS
    # is left out: allow_patterns() falls back to the 0.32 list without it)
    Call("mlx_lm", "load", args=("path_or_hf_repo",)),
    Call("mlx_lm", "generate", args=("model", "tokenizer"), kwargs=("prompt", "max_tokens")),
    Call(
        "mlx_lm.convert",
        "convert",
        args=("hf_path", "mlx_path"),
        kwargs=("quantize", "q_bits", "q_group_size"),
    ),
    Call("mlx_lm.utils", "_get_classes", args=("config",)),
)


def problems(
    contract: tuple[Any, ...] = CONTRACT, load: Importer = importlib.import_module
) -> list[str]:
    """One sentence per upstream name or signature the adapter relies on
    that the importable mlx-lm no longer has; [] when all are there."""
    found: list[str] = []
    for row in contract:
        for problem in row.check(load):
            if problem not in found:  # a missing class is one finding, not one per row
                found.append(problem)
    return found


def main() -> int:
    """Print what moved (exit 1), or that nothing did (exit 0)."""
    try:
        from mlx_lm import __version__ as version
    except Exception as e:
        print(f"mlx-lm does not import: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    found = problems()
    if not found:
        print(f"mlx-lm {version}: every name the adapter uses is present")
        return 0
    print(
        f"mlx-lm {version}: {len(found)} name(s) the adapter uses moved "
        "(mlx_native_server/adapter/ must follow):",
        file=sys.stderr,
    )
    for problem in found:
        print(f"  {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
