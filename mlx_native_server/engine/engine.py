"""The engine: mlx-lm's server engine, loaded once, and this server's policy around it.

Policy lives here: which KV bits this backend can serve, the context cap and
the memory guard a request passes before its prefill, recovering after a
failed generation, the test hooks, stopping, and the activity the watchdog
reads. Upstream is reached only through the adapter (adapter/server.py), and
`generate` returns a `Run` of plain Steps (engine/types.py), so no mlx-lm
object leaves it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from ..adapter.kv import kv_quantization_works
from ..adapter.server import MLX_LM_VERSION, Upstream, install_no_logprob_sync
from ..cache.configure import make_prompt_cache_store
from ..cache.store import Ticket
from ..core.config import Settings
from . import hooks
from .types import ChatRequest, ContextOverflow, EngineUnavailable, MemoryExhausted, Run
from .watchdog import EngineActivity

log = logging.getLogger("mlx_native_server.engine.engine")


def _vocab_size(model_dir) -> int | None:
    try:
        return int(json.loads((model_dir / "config.json").read_text())["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _head_dim(model_dir) -> int:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return 128
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def fit_or_spill(plan, store, prompt_tokens: int, max_tokens: int, others_tokens: int = 0) -> int:
    """Make room for a request under the memory plan's limit: while it would
    not fit (memory_plan.request_fits, with the bytes mlx holds now and the
    tokens the running requests may still add), spill half of what the
    prompt cache holds to disk. Returns the bytes spilled; raises
    MemoryExhausted when nothing is left to spill and it still does not fit."""
    from ..memory.plan import request_fits

    spilled = 0
    while not request_fits(plan, mx.get_active_memory(), prompt_tokens, max_tokens, others_tokens):
        spill = getattr(store, "spill", None)
        freed = spill(max(store.nbytes // 2, 1)) if spill is not None and store.nbytes else 0
        if not freed:
            beside = f" (beside {others_tokens} the running requests may add)" * bool(others_tokens)
            raise MemoryExhausted(
                f"{prompt_tokens} prompt tokens plus up to {max_tokens} more{beside} "
                f"need more memory than the plan's limit leaves ({mx.get_active_memory() / 1e9:.2f} GB in use of "
                f"{plan.limit / 1e9:.2f} GB)"
            )
        mx.clear_cache()
        spilled += freed
        log.info("memory: spilled %d bytes of prompt cache to fit a request", freed)
    return spilled


# mlx's own variable: where its CUDA backend keeps the kernels it compiles.
KERNEL_CACHE = "MLX_PTX_CACHE_DIR"


def keep_compiled_kernels(kernels_dir, environ=os.environ) -> str:
    """Where mlx's CUDA backend keeps the kernels it compiles at run time.

    mlx keeps them in $TMPDIR/mlx/<version>/ptx, which a reboot empties; the
    first request after one then waits while mlx compiles the model's kernels
    again (on the H200 a fresh server's warm-up took ~115 s longer without
    them). They go to `kernels_dir`/<mlx version> instead (Paths.mlx_kernels_dir:
    local-models/.mlx-kernels; mlx names its own kernels' files by kernel and
    shape alone, so the version keeps an upgraded mlx off older ones), unless
    MLX_PTX_CACHE_DIR says otherwise. Set before mlx compiles anything.
    Returns the directory."""
    version = getattr(mx, "__version__", "unknown")  # (not in mlx's type stubs)
    default = str(kernels_dir / version)
    return environ.setdefault(KERNEL_CACHE, default)


def repair_random_state() -> bool:
    """Reseed mlx's global random key if it no longer evaluates; True if it had to.

    An exception raised while the sampler runs (inside mlx-lm's compiled
    categorical sampling, whose state is `mx.random.state`) leaves that key
    an array without a primitive: every later sampled generation then fails
    with "[eval] Attempting to eval an array without a primitive"."""
    try:
        mx.eval(mx.random.state)
        return False
    except Exception:
        mx.random.seed(int.from_bytes(os.urandom(8), "little"))
        log.warning("the random state was broken by a failed generation; reseeded it")
        return True


class Engine:
    """mlx-lm's engine, loaded once: generation thread, batching, prompt cache,
    distributed ranks (under mlx.launch every rank builds one)."""

    def __init__(self, settings: Settings, *, test_hooks: bool = False):
        self.settings = settings
        self.test_hooks = test_hooks
        if mx.cuda.is_available():  # the only backend that reads the variable
            kernels = keep_compiled_kernels(settings.paths.mlx_kernels_dir)
            log.info("CUDA kernels mlx compiles are kept in %s", kernels)
        self.kv_bits = self._choose_kv_bits(settings)
        self.prompt_cache = make_prompt_cache_store(
            settings,
            kv_bits=self.kv_bits,
            mlx_lm_version=MLX_LM_VERSION,
            distributed=mx.distributed.init().size() > 1,
        )
        # (prompt_tokens, max_tokens, others_tokens) -> None, raising MemoryExhausted
        self._memory_check: Callable[[int, int, int], object] | None = None
        install_no_logprob_sync(on_failure=repair_random_state)
        self._upstream = Upstream(
            settings,
            self.kv_bits,
            self.prompt_cache,
            admit=self._admit,
            on_failure=repair_random_state,
        )
        if test_hooks:
            self._upstream.install_script_hook(hooks.script_processors)
        self._lock = threading.Lock()
        self.activity = EngineActivity()  # what the watchdog reads
        self.vocab_size = _vocab_size(settings.model_path)
        self.healthy = True  # False once a failure left the engine unusable (see recover)
        self.memory_limit: int | None = None  # bytes the memory plan allows, once set

    def recover(self) -> None:
        """After a generation failed: put right what a failure can break, then
        check that the engine still computes. If it does not, it is marked
        unhealthy: /health answers 503 and the watchdog exits non-zero, so
        the service manager restarts the server."""
        try:
            repair_random_state()
            mx.eval(mx.arange(4) + 1)
        except Exception:
            log.exception("the engine cannot recover from the failure")
            self.healthy = False

    def guard_memory(self, plan) -> None:
        """Before each prefill (on the generation thread): a request whose KV
        cache could grow past the plan's limit first spills prompt-cache
        entries to disk, then, if it still cannot fit, is refused with
        MemoryExhausted instead of running mlx out of memory."""
        self.memory_limit = plan.limit
        store = self.prompt_cache
        self._memory_check = lambda prompt, most, others: fit_or_spill(
            plan, store, prompt, most, others
        )

    def _admit(self, prompt_tokens: int, max_tokens: int, others_tokens: int = 0) -> int:
        """(generation thread, once the prompt is tokenized) The context cap: a
        prompt that alone reaches it is refused, and max_tokens is clamped to
        what remains; then the memory guard, beside the `others_tokens` the
        running requests may still add. Returns the max_tokens to use."""
        cap = self.settings.max_tokens
        if prompt_tokens >= cap:
            raise ContextOverflow(prompt_tokens, cap)
        max_tokens = min(max_tokens, cap - prompt_tokens)
        if self._memory_check is not None:
            self._memory_check(prompt_tokens, max_tokens, others_tokens)
        return max_tokens

    @staticmethod
    def active_memory() -> int:
        """Bytes mlx holds for arrays now."""
        return mx.get_active_memory()

    @staticmethod
    def _choose_kv_bits(settings: Settings) -> int | None:
        if not settings.kv_bits:
            return None
        head_dim = _head_dim(settings.model_path)
        if kv_quantization_works(settings.kv_bits, settings.kv_group_size, head_dim):
            return settings.kv_bits
        log.warning(
            "this backend (%s) cannot quantize the KV cache at %d bits; serving "
            "with full-precision KV instead (set kv_bits = 0 to silence this).",
            mx.default_device(),
            settings.kv_bits,
        )
        return None

    @property
    def rank(self) -> int:
        return mx.distributed.init().rank()

    @property
    def loaded(self) -> bool:
        return self._upstream.loaded

    @property
    def alive(self) -> bool:
        return self._upstream.alive

    @property
    def mlx_lm_version(self) -> str:
        return MLX_LM_VERSION

    def count_tokens(self, request: ChatRequest) -> int:
        """Prompt tokens of a chat request, with the real tokenizer and template."""
        if not self.loaded:
            raise EngineUnavailable("the model is still loading")
        with self._lock:
            return self._upstream.count_tokens(request)

    def check_context(self, request: ChatRequest) -> None:
        """Raise ContextOverflow (or ConversationRefused) now, for a request
        that waits behind others: the engine would only find out when it
        takes the request, after its stream has opened."""
        n = self.count_tokens(request)
        if n >= self.settings.max_tokens:
            raise ContextOverflow(n, self.settings.max_tokens)

    def generate(self, request: ChatRequest, progress=None, waiting=None) -> Run:
        """Queue a request; returns its Run once the engine has taken it.

        While it waits for the engine (another request is being served),
        `waiting()` is called every keepalive_interval seconds; if it raises,
        the request is abandoned (and stopped once the engine reaches it).
        Raises ContextOverflow, EngineUnavailable, or the engine's own error.
        """
        if not self.alive:
            raise EngineUnavailable("the generation thread has stopped")
        ticket = Ticket(session=request.session_id)  # the prompt cache fills in its Lookup
        with self.activity.waiting():
            run = self._upstream.submit(
                self._resolved(request), ticket, self.activity.progress(progress), waiting
            )
        # A cancelled request may never hear from the engine again: not a stall.
        run.watch(lambda responses: self.activity.track(responses, cancelled=lambda: run.stopped))
        return run

    def break_for_test(self, hang_seconds: float = 0.0) -> None:
        """Test hook (MLX_NATIVE_SERVER_TEST_HOOKS=1 only): the generation
        thread blocks for `hang_seconds` (a wedged GPU call), then dies of an
        exception (a crash inside mlx-lm)."""
        if not self.test_hooks:
            raise RuntimeError("test hooks are off")
        self._upstream.inject(hooks._Poison(hang_seconds))

    def _resolved(self, r: ChatRequest) -> ChatRequest:
        """`r` with the server's defaults filled in, as the engine runs it."""
        s = self.settings
        return dataclasses.replace(
            r,
            temperature=s.temperature if r.temperature is None else r.temperature,
            top_p=s.top_p if r.top_p is None else r.top_p,
            top_k=self._top_k(s.top_k if r.top_k is None else r.top_k),
            max_tokens=r.max_tokens or s.max_tokens,
            # -1: random, as llama.cpp clients say
            seed=None if r.seed is None or r.seed < 0 else r.seed,
            script=r.script if self.test_hooks else None,
        )

    def _top_k(self, top_k: int) -> int:
        """mlx-lm's sampler takes 0 < top_k < vocabulary; a top-k of the whole
        vocabulary or more keeps every token, which is top-k off (0)."""
        if top_k < 0 or (self.vocab_size is not None and top_k >= self.vocab_size):
            return 0
        return top_k

    def stop(self) -> None:
        """Stop the generation thread, then write the live prompt cache to disk.
        Under mlx.launch the thread cannot be joined: it waits in collectives
        with the other ranks, which the launcher stops along with this one."""
        if self._upstream.distributed:
            return
        self._upstream.stop_and_join()
        persist = getattr(self.prompt_cache, "persist", None)
        if persist is not None:
            try:
                persist()
            except Exception:  # a failed write must not turn a clean stop into a crash
                log.exception("prompt cache: writing the live entries failed")

    def join(self) -> None:
        self._upstream.join()

    def batch_stats(self) -> dict[str, int | float | str] | None:
        """Sequences decoding, prefilling and queued in the engine, how many
        decode steps ran batched, the tokens they handed out and the seconds
        they took, and what their attention and experts run on (None under
        mlx.launch)."""
        return self._upstream.batch_stats()

    def cache_stats(self) -> dict[str, Any]:
        stats = getattr(self.prompt_cache, "stats", None)
        if callable(stats):
            return stats()
        return {"entries": len(self.prompt_cache), "bytes": self.prompt_cache.nbytes}
