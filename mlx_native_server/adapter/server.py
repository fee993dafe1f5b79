"""mlx-lm's server engine (`mlx_lm.server`), loaded once, behind our own types.

Everything here touches mlx-lm's server internals: the argparse Namespace
its ModelProvider and ResponseGenerator read, a ResponseGenerator subclass,
its request-queue protocol and its GenerationArguments (patches.py holds the
two module globals it is patched through). Each patch or private use says
why it exists and what upstream change would remove it. contract.py lists
every upstream name used here; keep the two in step.
"""

from __future__ import annotations

import argparse
import gc
import logging
import threading
from collections.abc import Callable
from queue import Empty as QueueEmpty
from queue import Queue
from typing import Any

from ..engine.types import ChatRequest, ConversationRefused, EngineUnavailable

try:
    from mlx_lm import __version__ as MLX_LM_VERSION
    from mlx_lm import server as upstream

    from .patches import install_logits_hook, install_no_logprob_sync
    from .run import UpstreamRun
    from .scheduler import Scheduler
except ImportError as e:  # pragma: no cover - depends on the installed mlx-lm
    raise ImportError(
        f"mlx-lm's internals moved ({e}); `python -m mlx_native_server.adapter.contract` "
        "names what moved, and ./setup-mlx-lm-repo.sh --reset goes back to the pinned version."
    ) from e

__all__ = ["MLX_LM_VERSION", "Upstream", "install_no_logprob_sync"]

log = logging.getLogger("mlx_native_server.adapter.server")

DEFAULT_MODEL = "default_model"  # upstream's alias for the model given at start


def _cli_args(settings, kv_bits: int | None) -> argparse.Namespace:
    """The Namespace upstream's ModelProvider and ResponseGenerator read (every
    `cli_args.<name>` in mlx_lm/server.py: contract.CLI_ARGS). A typed config
    object taken by ModelProvider would replace it."""
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
        decode_concurrency=settings.concurrency,
        prompt_concurrency=settings.concurrency,
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


class _Generator(upstream.ResponseGenerator):
    """Upstream's generator with our own loop, plus one hook where a
    request's prompt is known.

    Overrides `ResponseGenerator._generate` on one machine with the
    scheduler (scheduler.py: continuous batching at any KV setting, one
    request pipelined like `generate_step`); under mlx.launch upstream's loop
    runs, since it keeps the ranks in step. Removed by an upstream
    BatchGenerator that batches quantized caches and pipelines a lone request.

    Overrides `ResponseGenerator._tokenize`, which upstream calls on the
    generation thread right before it looks the prompt up in the prompt cache.
    Removed by an upstream hook called with the tokenized prompt (and a
    per-request slot for our cache ticket)."""

    # (prompt tokens, max_tokens, tokens the running requests may still add)
    # -> the max_tokens to use; raises to refuse the request (the engine's
    # context cap and memory guard). Set by Upstream.
    admit: Callable[[int, int, int], int] | None = None
    # Called on the generation thread after a generation failed. Set by Upstream.
    on_failure: Callable[[], object] | None = None
    # The loop, once _generate runs it (None under mlx.launch).
    scheduler: Scheduler | None = None

    def _generate(self):
        if self._is_distributed:
            return super()._generate()
        self.scheduler = Scheduler(self)
        self.scheduler.run()
        # As upstream: the model and prompt cache go on this thread's stream.
        self.model_provider.reset()
        del self.prompt_cache
        gc.collect()

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
        if self.admit is not None:
            others = self.scheduler.tokens_to_come() if self.scheduler is not None else 0
            args.max_tokens = self.admit(len(result[0]), args.max_tokens, others)
        return result


def _stop_when_reached(rqueue: Queue) -> None:
    """An abandoned request: stop it as soon as the engine starts it."""
    ctx = rqueue.get()
    if not isinstance(ctx, Exception):
        ctx.stop()


def _responses(gen, rqueue: Queue, progress):
    """The rest of a request's queue, as upstream's ResponseGenerator.generate
    yields it (its protocol: progress tuples, Responses, an Exception or None)."""
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


def _arguments(r):
    """Upstream's GenerationArguments for `r`, a ChatRequest whose sampling
    fields Engine._resolved has filled in (none is None but seed). Left
    unannotated: upstream's own dataclasses are typed looser than it uses
    them (adapter=None)."""
    args = upstream.GenerationArguments(
        model=upstream.ModelDescription(model=DEFAULT_MODEL, draft=DEFAULT_MODEL, adapter=None),
        sampling=upstream.SamplingArguments(
            temperature=r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            min_p=r.min_p,
            xtc_probability=0.0,
            xtc_threshold=0.0,
        ),
        logits=upstream.LogitsProcessorArguments(
            logit_bias=None,
            repetition_penalty=0.0,
            repetition_context_size=20,
            presence_penalty=0.0,
            presence_context_size=20,
            frequency_penalty=0.0,
            frequency_context_size=20,
        ),
        stop_words=list(r.stop),
        max_tokens=r.max_tokens,
        num_draft_tokens=0,
        logprobs=False,
        top_logprobs=-1,
        seed=r.seed,
        chat_template_kwargs=r.chat_template_kwargs,
    )
    if r.script is not None:
        args.script = r.script  # read by Upstream.install_script_hook; upstream has no such field
    return args


class Upstream:
    """mlx-lm's engine for the configured model: its ModelProvider and a
    generation thread (batching, prompt cache, distributed ranks), fed
    requests as ChatRequests, answering with UpstreamRuns.

    `admit(prompt_tokens, max_tokens, others_tokens) -> max_tokens` runs on
    the generation thread once a request's prompt is tokenized; it may raise
    to refuse it.
    """

    def __init__(
        self,
        settings,
        kv_bits: int | None,
        prompt_cache,
        admit: Callable[[int, int, int], int] | None = None,
        on_failure: Callable[[], object] | None = None,
    ):
        self._provider = upstream.ModelProvider(cli_args=_cli_args(settings, kv_bits))
        self._gen = _Generator(model_provider=self._provider, prompt_cache=prompt_cache)
        self._gen.admit = admit
        self._gen.on_failure = on_failure
        self._keepalive = settings.keepalive_interval
        self.version = MLX_LM_VERSION

    @property
    def loaded(self) -> bool:
        return self._provider.model is not None

    @property
    def alive(self) -> bool:
        return self._gen.generation_available()

    @property
    def distributed(self) -> bool:
        """Under mlx.launch (more than one rank)."""
        return self._provider.is_distributed

    def batch_stats(self) -> dict[str, int | float | str] | None:
        """The scheduler's counts (None under mlx.launch, or before it starts)."""
        scheduler = self._gen.scheduler
        return scheduler.stats() if scheduler is not None else None

    def count_tokens(self, request: ChatRequest) -> int:
        """Prompt tokens of a chat request, with the model's tokenizer and chat
        template; ConversationRefused if the template refuses it."""
        tokenizer: Any = self._provider.tokenizer
        try:
            prompt = tokenizer.apply_chat_template(
                request.messages,
                tools=request.tools,
                add_generation_prompt=True,
                tokenize=True,
                **(request.chat_template_kwargs or {}),
            )
        except Exception as e:
            raise ConversationRefused(str(e)) from e
        return len(prompt)

    def install_script_hook(self, make: Callable[[str, Callable[[str], list[int]], int], list]):
        """Test hooks: a request with a script gets the logits processors
        `make(script, encode, eos_id)` returns (`encode`: the tokenizer's,
        without special tokens)."""

        def extra(args) -> list:
            script = getattr(args, "script", None)
            if script is None:
                return []
            tokenizer: Any = self._provider.tokenizer
            return make(
                script,
                lambda text: tokenizer.encode(text, add_special_tokens=False),
                tokenizer.eos_token_id,
            )

        install_logits_hook(extra)

    def submit(self, request: ChatRequest, ticket: Any, progress=None, waiting=None):
        """Queue `request` (its sampling fields resolved) and wait until the
        engine takes it; returns its UpstreamRun. `ticket` goes to the prompt
        cache (store.begin). While it waits, `waiting()` is called every
        keepalive_interval seconds; if it raises, the request is abandoned
        (and stopped once the engine reaches it). Raises EngineUnavailable
        if the generation thread has died, or the engine's own error."""
        completion = upstream.CompletionRequest(
            request_type="chat",
            prompt="",
            messages=request.messages,
            tools=request.tools or None,
            role_mapping=None,
        )
        # An attribute upstream does not know, read back in _Generator._tokenize.
        completion.cache_ticket = ticket  # type: ignore[attr-defined]
        try:
            ctx, responses = self._queue(completion, _arguments(request), progress, waiting)
        except RuntimeError as e:  # upstream's only sign that its thread died
            if "generation thread died" in str(e):
                raise EngineUnavailable("the generation thread has stopped") from e
            raise
        return UpstreamRun(ctx, responses, ticket)

    def _queue(self, completion, args, progress, waiting):
        """Upstream's ResponseGenerator.generate, calling `waiting` while
        queued: its request-queue protocol re-implemented (private
        `_await_response`). Removed by an upstream generate() that takes a
        keepalive callback."""
        gen = self._gen
        if waiting is None:
            return gen.generate(completion, args, progress_callback=progress)
        rqueue: Queue = Queue()
        gen.requests.put((rqueue, completion, args))
        while True:
            try:
                ctx = rqueue.get(timeout=self._keepalive)
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

    def inject(self, item: Any) -> None:
        """Test hook: put `item` on upstream's request queue as it is."""
        self._gen.requests.put(item)

    def stop_and_join(self) -> None:
        self._gen.stop_and_join()

    def join(self) -> None:
        self._gen.join()
