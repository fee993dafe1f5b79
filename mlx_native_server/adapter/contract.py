"""Every mlx-lm name and signature the adapter relies on, checked in seconds.

`CONTRACT` is one table: each row names an upstream module and attribute
and what the adapter does with it (calls it with these parameters, reads an
attribute its instances set, patches a global upstream calls by name, or
hands upstream an object of ours whose attributes upstream reads).
`problems()` checks the table against the mlx-lm that imports, and says in
one sentence per row what moved, so a new mlx-lm fails here, by name, and
not at request time:

    python -m mlx_native_server.adapter.contract     # exit 1 and the list, or 0

./setup-mlx-lm-repo.sh runs it against each build before installing it.
This module imports nothing from mlx-lm or the rest of the package at import
time, so it still runs when the adapter itself no longer imports.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

Importer = Callable[[str], Any]


class _Missing(Exception):
    """A row's module or attribute is not there; the message says which."""


def _resolve(load: Importer, module: str, dotted: str) -> Any:
    try:
        obj = load(module)
    except Exception as e:
        raise _Missing(f"{module} does not import ({type(e).__name__}: {e})") from None
    path = module
    for part in dotted.split("."):
        path += "." + part
        if not hasattr(obj, part):
            raise _Missing(f"{path} is missing")
        obj = getattr(obj, part)
    return obj


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


@dataclass(frozen=True)
class Call:
    """A callable the adapter calls (or overrides): `args` are passed by
    position, in this order; `kwargs` by name."""

    module: str
    name: str
    args: tuple[str, ...] = ()
    kwargs: tuple[str, ...] = ()

    def check(self, load: Importer) -> list[str]:
        where = f"{self.module}.{self.name}"
        try:
            sig = inspect.signature(_resolve(load, self.module, self.name))
        except _Missing as e:
            return [str(e)]
        except (TypeError, ValueError):
            return [f"{where} is no longer a callable with a signature"]
        params = [p for p in sig.parameters.values() if p.name != "self"]
        positional = [
            p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        names = {p.name for p in params if p.kind != p.POSITIONAL_ONLY}
        has_var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
        found = []
        for i, name in enumerate(self.args):
            if i >= len(positional) or positional[i] != name:
                at = positional[i] if i < len(positional) else "nothing"
                found.append(
                    f"{where}: the adapter passes '{name}' as argument {i + 1}, "
                    f"upstream now takes {at} there (signature {sig})"
                )
        for name in self.kwargs:
            if name not in names and not has_var_kw:
                found.append(f"{where} has no parameter '{name}' (signature {sig})")
        return found


@dataclass(frozen=True)
class Attr:
    """An attribute the adapter reads: of a module, or of a class
    ("Class.attr"). With `instance`, one its instances set (`self.attr = ...`
    in the class's source, or a dataclass field)."""

    module: str
    name: str
    instance: bool = False

    def check(self, load: Importer) -> list[str]:
        if not self.instance:
            try:
                _resolve(load, self.module, self.name)
            except _Missing as e:
                return [str(e)]
            return []
        owner, _, attr = self.name.rpartition(".")
        try:
            cls = _resolve(load, self.module, owner)
        except _Missing as e:
            return [str(e)]
        is_dataclass = dataclasses.is_dataclass(cls)
        fields = {f.name for f in dataclasses.fields(cls)} if is_dataclass else set()
        sets = re.search(rf"\bself\.{re.escape(attr)}\s*(:[^=\n]*)?=(?!=)", _source(cls))
        if attr in fields or sets or attr in vars(cls):
            return []
        return [
            f"{self.module}.{self.name} is missing (no dataclass field and no "
            f"'self.{attr} =' in {owner}'s source)"
        ]


@dataclass(frozen=True)
class Global:
    """A module global the adapter replaces: upstream must still call it by
    that name from `caller` ("Class.method"), or the patch does nothing."""

    module: str
    name: str
    caller: str
    args: tuple[str, ...] = ()

    def check(self, load: Importer) -> list[str]:
        found = Call(self.module, self.name, self.args).check(load)
        try:
            source = _source(_resolve(load, self.module, self.caller))
        except _Missing as e:
            return found + [str(e)]
        if not re.search(rf"(?<![\w.]){re.escape(self.name)}\(", source):
            found.append(
                f"{self.module}.{self.caller} no longer calls {self.name}(), "
                f"so replacing {self.module}.{self.name} does nothing"
            )
        return found


@dataclass(frozen=True)
class Uses:
    """Upstream code the adapter depends on as written: `text` must appear in
    the source of `name` (`why` says what relies on it)."""

    module: str
    name: str
    text: str
    why: str

    def check(self, load: Importer) -> list[str]:
        try:
            source = _source(_resolve(load, self.module, self.name))
        except _Missing as e:
            return [str(e)]
        if self.text in source:
            return []
        return [f"{self.module}.{self.name} no longer has `{self.text}` ({self.why})"]


@dataclass(frozen=True)
class Reads:
    """Attributes upstream reads off an object the adapter hands it: every
    name `pattern` (one group) finds in the module's source must be in
    `provided`."""

    module: str
    pattern: str
    provided: tuple[str, ...]
    what: str

    def check(self, load: Importer) -> list[str]:
        try:
            source = _source(load(self.module))
        except Exception as e:
            return [f"{self.module} does not import ({type(e).__name__}: {e})"]
        read = sorted(set(re.findall(self.pattern, source)) - set(self.provided))
        return [
            f"{self.module} reads {name!r} off {self.what}, which does not set it" for name in read
        ]


S, G, C, B = "mlx_lm.server", "mlx_lm.generate", "mlx_lm.models.cache", "mlx_lm.models.base"

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
        "_RequestQueue stops a prefill when a progress tuple arrives",
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
