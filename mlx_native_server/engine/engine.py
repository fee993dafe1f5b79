"""The one door to mlx-lm's server internals.

Everything that touches private parts of `mlx_lm.server` (ModelProvider,
ResponseGenerator, GenerationArguments, the text state machine) lives here,
so an mlx-lm upgrade is a one-file change and a failing import says exactly
what moved. The rest of the package sees `Engine`, `ChatRequest` and the
plain events of `generation.py`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from queue import Empty as QueueEmpty
from queue import Queue
from typing import Any

import mlx.core as mx

try:
    from mlx_lm import __version__ as MLX_LM_VERSION
    from mlx_lm import server as upstream
    from mlx_lm.generate import TextStateMachine
    from mlx_lm.models.cache import QuantizedKVCache
    from mlx_lm.models.base import scaled_dot_product_attention
except ImportError as e:  # pragma: no cover - depends on the installed mlx-lm
    raise ImportError(
        f"mlx-lm's internals moved ({e}); mlx_native_server/engine/engine.py supports "
        "mlx-lm 0.32.2: run ./setup-mlx-lm-repo.sh --reset to go back to the pinned version."
    ) from e

from ..core.config import Settings
from ..cache.store import Ticket, make_prompt_cache_store
from .types import (
    ChatRequest,
    ContextOverflow,
    ConversationRefused,
    EngineUnavailable,
    MemoryExhausted,
    PrefillCancelled,
)
from .watchdog import EngineActivity

log = logging.getLogger("mlx_native_server.engine.engine")

DEFAULT_MODEL = "default_model"  # upstream's alias for the model given at start


def _cli_args(settings: Settings, kv_bits: int | None) -> argparse.Namespace:
    """The Namespace upstream's ModelProvider and ResponseGenerator read."""
    return argparse.Namespace(
        model=str(settings.model_path),
        adapter_path=None,
        draft_model=None,
        num_draft_tokens=3,
        trust_remote_code=False,
        chat_template="",
        use_default_chat_template=False,
        chat_template_args={},
        pipeline=settings.pipeline,
        decode_concurrency=32,
        prompt_concurrency=8,
        prefill_step_size=settings.prefill_step_size,
        prompt_cache_size=settings.prompt_cache_size,
        prompt_cache_bytes=settings.prompt_cache_bytes,
        kv_bits=kv_bits,
        kv_group_size=settings.kv_group_size,
        quantized_kv_start=settings.quantized_kv_start,
        max_tokens=settings.max_tokens,
        temp=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        min_p=0.0,
        allowed_origins=[],
    )


def kv_quantization_works(bits: int, group_size: int, head_dim: int) -> bool:
    """Run quantized attention once on this backend (mlx 0.32.4 on CUDA lacks
    `quantized_matmul` for some shapes)."""
    try:
        cache = QuantizedKVCache(group_size=group_size, bits=bits)
        kv = mx.random.normal((1, 2, 8, head_dim)).astype(mx.float16)
        keys, values = cache.update_and_fetch(kv, kv)
        q = mx.random.normal((1, 2, 1, head_dim)).astype(mx.float16)
        out = scaled_dot_product_attention(
            q, keys, values, cache=cache, scale=head_dim**-0.5, mask=None
        )
        mx.eval(out)
        return True
    except Exception as e:  # any backend failure means "cannot quantize here"
        log.debug("KV quantization probe failed: %s", e)
        return False


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


def fit_or_spill(plan, store, prompt_tokens: int, max_tokens: int) -> int:
    """Make room for a request under the memory plan's limit: while it would
    not fit (memory_plan.request_fits, with the bytes mlx holds now), spill
    half of what the prompt cache holds to disk. Returns the bytes spilled;
    raises MemoryExhausted when nothing is left to spill and it still does
    not fit."""
    from ..memory.plan import request_fits

    spilled = 0
    while not request_fits(plan, mx.get_active_memory(), prompt_tokens, max_tokens):
        spill = getattr(store, "spill", None)
        freed = spill(max(store.nbytes // 2, 1)) if spill is not None and store.nbytes else 0
        if not freed:
            raise MemoryExhausted(
                f"{prompt_tokens} prompt tokens plus up to {max_tokens} more need more memory "
                f"than the plan's limit leaves ({mx.get_active_memory() / 1e9:.2f} GB in use of "
                f"{plan.limit / 1e9:.2f} GB)")
        mx.clear_cache()
        spilled += freed
        log.info("memory: spilled %d bytes of prompt cache to fit a request", freed)
    return spilled


class _ScriptProcessor:
    """Logits processor that forces the next tokens to spell a script, then
    EOS; with `fail`, it raises once the script is spelt (an engine failure)."""

    def __init__(self, token_ids: list[int], eos_id: int, fail: bool = False):
        self._ids = token_ids + [eos_id]
        self._fail = fail
        self._i = 0

    def __call__(self, tokens, logits):
        if self._fail and self._i >= len(self._ids) - 1:
            raise RuntimeError("the engine failed (test hook)")
        token = self._ids[min(self._i, len(self._ids) - 1)]
        self._i += 1
        vocab = mx.arange(logits.shape[-1])
        forced = mx.where(vocab == token, 0.0, -float("inf")).astype(logits.dtype)
        # Depend on the real logits, so the forward pass still runs each step.
        return mx.depends(mx.broadcast_to(forced, logits.shape), logits)


class _NoLogprob:
    """Stands in for a token's log-probabilities, which this server never
    returns. Upstream's one-request path reads `logprobs[token].item()` for
    every token; that small eval waits for the next step, which mlx has
    already queued, so the graph of the step after cannot be built meanwhile
    and decoding loses its pipelining (measured: server/direct 0.87 -> see
    benchmarks/README.md)."""

    __slots__ = ()

    def __getitem__(self, _index):
        return self

    def item(self) -> float:
        return 0.0


_NO_LOGPROB = _NoLogprob()


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


def _install_no_logprob_sync() -> None:
    """Wrap the stream_generate upstream's one-request path calls (once):
    no per-token logprob sync, and a failed generation leaves the random
    state usable for the next one (on the generation thread, before it runs)."""
    original = upstream.stream_generate
    if getattr(original, "_mns_wrapped", False):
        return

    def stream_generate(*args, **kwargs):
        try:
            for response in original(*args, **kwargs):
                response.logprobs = _NO_LOGPROB
                yield response
        except Exception:
            repair_random_state()
            raise

    stream_generate._mns_wrapped = True
    upstream.stream_generate = stream_generate


FAIL_MARKER = "<<fail>>"  # a script ending with this makes the engine raise


def _install_script_hook(engine: "Engine") -> None:
    """Wrap upstream's logits-processor factory so requests with a script spell it."""
    original = upstream._make_logits_processors

    def make(args):
        processors = original(args)
        script = getattr(args, "script", None)
        if script is None:
            return processors
        tokenizer = engine.tokenizer
        fail = script.endswith(FAIL_MARKER)
        text = script[: -len(FAIL_MARKER)] if fail else script
        ids = tokenizer.encode(text, add_special_tokens=False)
        return processors + [_ScriptProcessor(ids, tokenizer.eos_token_id, fail)]

    upstream._make_logits_processors = make


class _Poison:
    """A request-queue item that breaks the generation thread (test hook):
    upstream unpacks each item first, so unpacking this one blocks, then raises."""

    def __init__(self, hang_seconds: float):
        self.hang_seconds = hang_seconds

    def __iter__(self):
        time.sleep(self.hang_seconds)
        raise RuntimeError("generation thread broken by a test hook")


class _Generator(upstream.ResponseGenerator):
    """Upstream's generator, plus the context cap: a prompt that alone
    exceeds it is refused, and max_tokens is clamped to what remains."""

    context_cap: int = 1 << 62  # set by Engine right after construction
    memory_check = None  # (prompt_tokens, max_tokens) -> None; raises MemoryExhausted

    def _tokenize(self, tokenizer, request, args):
        # Upstream looks the prompt up (and later inserts it) right after
        # tokenizing, on this thread: tell the cache which request it is.
        begin = getattr(self.prompt_cache, "begin", None)
        if begin is not None:
            begin(getattr(request, "cache_ticket", None))
        try:
            result = super()._tokenize(tokenizer, request, args)
        except Exception as e:  # the chat template refused the conversation
            raise ConversationRefused(str(e)) from e
        n_prompt = len(result[0])
        if n_prompt >= self.context_cap:
            raise ContextOverflow(n_prompt, self.context_cap)
        args.max_tokens = min(args.max_tokens, self.context_cap - n_prompt)
        if self.memory_check is not None:
            self.memory_check(n_prompt, args.max_tokens)
        return result


class _RequestQueue(Queue):
    """A request's response queue that can stop its prefill.

    Upstream checks a request's stop flag once per generated token, so a
    client that leaves during a long prefill (minutes for a big prompt) keeps
    the engine busy until the prefill ends. On the one-request-at-a-time path
    (quantized KV) the prefill reports progress through this queue from the
    generation thread; raising there ends it, and upstream hands the error
    back through the queue. Not used where raising would hurt others: the
    batched path and distributed ranks.
    """

    def __init__(self):
        super().__init__()
        self.ctx = None

    def put(self, item, block=True, timeout=None):
        if isinstance(item, upstream.GenerationContext):
            self.ctx = item
        elif isinstance(item, tuple) and self.ctx is not None and self.ctx._should_stop:
            log.info("client left during the prefill; stopping it")
            raise PrefillCancelled("the client left during the prefill")
        super().put(item, block, timeout)


def _stop_when_reached(rqueue: Queue) -> None:
    """An abandoned request: stop it as soon as the engine starts it."""
    ctx = rqueue.get()
    if not isinstance(ctx, Exception):
        ctx.stop()


def _responses(gen, rqueue: Queue, progress):
    """The rest of a request's queue, as upstream's generate yields it."""
    while True:
        response = gen._await_response(rqueue)
        if response is None:
            return
        if isinstance(response, Exception):
            raise response
        if isinstance(response, tuple):
            if progress is not None:
                progress(*response)
            continue
        yield response


class Engine:
    """mlx-lm's engine, loaded once: generation thread, batching, prompt cache,
    distributed ranks (under mlx.launch every rank builds one)."""

    def __init__(self, settings: Settings, *, test_hooks: bool = False):
        self.settings = settings
        self.test_hooks = test_hooks
        self.kv_bits = self._choose_kv_bits(settings)
        self.model_provider = upstream.ModelProvider(_cli_args(settings, self.kv_bits))
        self.prompt_cache = make_prompt_cache_store(
            settings, kv_bits=self.kv_bits, mlx_lm_version=MLX_LM_VERSION,
            distributed=mx.distributed.init().size() > 1)
        _install_no_logprob_sync()
        if test_hooks:
            _install_script_hook(self)
        self._generator = _Generator(self.model_provider, self.prompt_cache)
        self._generator.context_cap = settings.max_tokens
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
        self._generator.memory_check = lambda prompt, most: fit_or_spill(plan, store, prompt, most)

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
            mx.default_device(), settings.kv_bits,
        )
        return None

    @property
    def rank(self) -> int:
        return mx.distributed.init().rank()

    @property
    def loaded(self) -> bool:
        return self.model_provider.model is not None

    @property
    def alive(self) -> bool:
        return self._generator.generation_available()

    @property
    def tokenizer(self):
        return self.model_provider.tokenizer

    @property
    def mlx_lm_version(self) -> str:
        return MLX_LM_VERSION

    def count_tokens(self, request: ChatRequest) -> int:
        """Prompt tokens of a chat request, with the real tokenizer and template."""
        if not self.loaded:
            raise EngineUnavailable("the model is still loading")
        tokenizer = self.tokenizer
        with self._lock:
            try:
                prompt = tokenizer.apply_chat_template(
                    request.messages, tools=request.tools, add_generation_prompt=True,
                    tokenize=True, **(request.chat_template_kwargs or {}),
                )
            except Exception as e:
                raise ConversationRefused(str(e)) from e
        return len(prompt)

    def check_context(self, request: ChatRequest) -> None:
        """Raise ContextOverflow (or ConversationRefused) now, for a request
        that waits behind others: the engine would only find out when it
        takes the request, after its stream has opened."""
        n = self.count_tokens(request)
        if n >= self.settings.max_tokens:
            raise ContextOverflow(n, self.settings.max_tokens)

    def generate(self, request: ChatRequest, progress=None, waiting=None):
        """Queue a request; returns (context, iterator of upstream Responses).

        While it waits for the engine (another request is being served),
        `waiting()` is called every keepalive_interval seconds; if it raises,
        the request is abandoned (and stopped once the engine reaches it).
        Raises ContextOverflow, EngineUnavailable, or the engine's own error.
        """
        if not self.alive:
            raise EngineUnavailable("the generation thread has stopped")
        args = self._arguments(request)
        completion = upstream.CompletionRequest(
            "chat", "", request.messages, request.tools or None, None
        )
        completion.cache_ticket = Ticket(session=request.session_id)
        try:
            with self.activity.waiting():
                ctx, responses = self._submit(
                    completion, args, self.activity.progress(progress), waiting)
        except RuntimeError as e:
            if "generation thread died" in str(e):
                raise EngineUnavailable("the generation thread has stopped") from e
            raise
        ctx.cache_ticket = completion.cache_ticket  # see cache_lookup
        # A cancelled request may never hear from the engine again: not a stall.
        return ctx, self.activity.track(responses, cancelled=lambda: ctx._should_stop)

    def _submit(self, completion, args, progress, waiting):
        """Upstream's ResponseGenerator.generate, calling `waiting` while queued."""
        gen = self._generator
        if waiting is None:
            return gen.generate(completion, args, progress_callback=progress)
        sequential = self.kv_bits is not None and not gen._is_distributed
        rqueue = _RequestQueue() if sequential else Queue()
        gen.requests.put((rqueue, completion, args))
        while True:
            try:
                ctx = rqueue.get(timeout=self.settings.keepalive_interval)
                break
            except QueueEmpty:
                if not gen.generation_available():
                    raise RuntimeError("generation thread died") from None
                try:
                    waiting()
                except BaseException:
                    threading.Thread(target=_stop_when_reached, args=(rqueue,), daemon=True).start()
                    raise
        if isinstance(ctx, Exception):
            raise ctx
        return ctx, _responses(gen, rqueue, progress)

    def break_for_test(self, hang_seconds: float = 0.0) -> None:
        """Test hook (MLX_NATIVE_SERVER_TEST_HOOKS=1 only): the generation
        thread blocks for `hang_seconds` (a wedged GPU call), then dies of an
        exception (a crash inside mlx-lm)."""
        if not self.test_hooks:
            raise RuntimeError("test hooks are off")
        self._generator.requests.put(_Poison(hang_seconds))

    def _arguments(self, r: ChatRequest):
        s = self.settings
        args = upstream.GenerationArguments(
            model=upstream.ModelDescription(model=DEFAULT_MODEL, draft=DEFAULT_MODEL, adapter=None),
            sampling=upstream.SamplingArguments(
                temperature=s.temperature if r.temperature is None else r.temperature,
                top_p=s.top_p if r.top_p is None else r.top_p,
                top_k=self._top_k(s.top_k if r.top_k is None else r.top_k),
                min_p=r.min_p, xtc_probability=0.0, xtc_threshold=0.0,
            ),
            logits=upstream.LogitsProcessorArguments(
                logit_bias=None, repetition_penalty=0.0, repetition_context_size=20,
                presence_penalty=0.0, presence_context_size=20,
                frequency_penalty=0.0, frequency_context_size=20,
            ),
            stop_words=list(r.stop),
            max_tokens=r.max_tokens or s.max_tokens,
            num_draft_tokens=0,
            logprobs=False,
            top_logprobs=-1,
            seed=None if r.seed is None or r.seed < 0 else r.seed,  # -1: random, as llama.cpp clients say
            chat_template_kwargs=r.chat_template_kwargs,
        )
        if self.test_hooks and r.script is not None:
            args.script = r.script
        return args

    def _top_k(self, top_k: int) -> int:
        """mlx-lm's sampler takes 0 < top_k < vocabulary; a top-k of the whole
        vocabulary or more keeps every token, which is top-k off (0)."""
        if top_k < 0 or (self.vocab_size is not None and top_k >= self.vocab_size):
            return 0
        return top_k

    def text_state(self, ctx):
        """A fresh state of the reasoning/tool/normal text state machine."""
        return ctx.text_sm.make_state(ctx.initial_state)

    split = staticmethod(TextStateMachine.split)
    flush = staticmethod(TextStateMachine.flush)
    discard = staticmethod(TextStateMachine.discard)

    def stop(self) -> None:
        """Stop the generation thread, then write the live prompt cache to disk.
        Under mlx.launch the thread cannot be joined: it waits in collectives
        with the other ranks, which the launcher stops along with this one."""
        if self._generator._is_distributed:
            return
        self._generator.stop_and_join()
        persist = getattr(self.prompt_cache, "persist", None)
        if persist is not None:
            try:
                persist()
            except Exception:  # a failed write must not turn a clean stop into a crash
                log.exception("prompt cache: writing the live entries failed")

    @staticmethod
    def cache_lookup(ctx):
        """What the prompt cache found for a request (a prompt_cache.Lookup), once
        the engine has looked its prompt up; None before."""
        ticket = getattr(ctx, "cache_ticket", None)
        return ticket.lookup if ticket is not None else None

    def join(self) -> None:
        self._generator.join()

    def cache_stats(self) -> dict[str, Any]:
        stats = getattr(self.prompt_cache, "stats", None)
        if callable(stats):
            return stats()
        return {"entries": len(self.prompt_cache), "bytes": self.prompt_cache.nbytes}
