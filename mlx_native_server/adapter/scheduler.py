"""The generation thread's loop: continuous batching at any KV setting.

Replaces `ResponseGenerator._generate` (mlx-lm 0.32.2) on one machine; under
mlx.launch upstream's own loop runs, since every rank must take the same
steps. Each turn of the loop:

1. takes the requests that arrived (upstream's request-queue protocol: the
   GenerationContext, progress tuples, Responses, then None or an error);
2. decodes one step for every running sequence (decode.py: alone on its own
   cache, pipelined like `generate_step`; together in one batched forward,
   full-precision or quantized KV);
3. prefills up to prefill_step_size prompt tokens, from the waiting prompts
   with the fewest tokens left first, so short prompts that arrive together
   all start at once, and a short side request overtakes a long prompt at
   the next chunk and joins the running set after its own prefill. Prompts
   that arrive while the first of them prefills start with it: its first
   token waits the one turn their prefills take (`_starting_together`).

A request with a seed, or one with images, runs alone (mlx's random state
is global; images take upstream's one-request path). A finished, stopped or
failed request leaves the batch at once; a finished or stopped one's cache
goes back into the prompt cache store under its own ticket, where the
store's own limits (entries, bytes) decide what stays. The live caches are
the memory guard's to count (the engine's admission check).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, cast

import mlx.core as mx
from mlx_lm import server as upstream
from mlx_lm.generate import wired_limit
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

from ..engine.types import PrefillCancelled
from . import cuda_attention, cuda_experts
from .decode import KVQuantization, Running
from .sequence import Sequence

log = logging.getLogger("mlx_native_server.adapter.scheduler")


class Scheduler:
    def __init__(self, gen):
        self.gen = gen  # the ResponseGenerator whose thread this runs on
        cli = gen.cli_args
        self.kv = KVQuantization(cli.kv_bits, cli.kv_group_size, cli.quantized_kv_start)
        self.step_size = cli.prefill_step_size
        self.max_sequences = max(1, cli.decode_concurrency)
        self.backlog: deque = deque()  # (rqueue, CompletionRequest, GenerationArguments)
        self.prefilling: list[Sequence] = []
        self.running: Running | None = None
        self.alone = False  # the live request must run alone (a seed)
        self.steps = 0  # decode steps run
        self.batched_steps = 0  # of those, steps that decoded two sequences or more
        self.widest = 0  # the most sequences one step decoded
        self.decoded_tokens = 0  # tokens the decode steps handed out
        self.decode_seconds = 0.0  # the thread's time in decode steps, hand-off included
        self._samplers: dict[tuple, Any] = {}

    # ---- the loop ---------------------------------------------------------

    def run(self) -> None:
        provider = self.gen.model_provider
        provider.load_default()
        stream = mx.default_stream(mx.default_device())
        with mx.stream(stream), wired_limit(provider.model, [stream]):
            self.running = Running(provider.model, self.kv)
            self.stream = stream
            while not self.gen._stop:
                self._take_requests()
                self._admit()
                if self.running and not self._starting_together():
                    self._decode()
                if self.prefilling:
                    self._prefill()

    def stats(self) -> dict[str, int | float | str]:
        """What /status shows; read from other threads (plain values).
        decoded_tokens over decode_seconds is the engine's own decode speed,
        whatever the HTTP side adds to what a client sees."""
        running = self.running
        return {
            "decoding": len(running) if running is not None else 0,
            "prefilling": len(self.prefilling),
            "queued": len(self.backlog),
            "steps": self.steps,
            "batched_steps": self.batched_steps,
            "widest_batch": self.widest,
            "decoded_tokens": self.decoded_tokens,
            "decode_seconds": round(self.decode_seconds, 6),
            "attention": cuda_attention.path(),
            "experts": cuda_experts.path(),
        }

    def tokens_to_come(self) -> int:
        """Tokens the live requests may still add to their caches (their
        prompts' rest and replies), for the memory guard."""
        live = list(self.prefilling) + (list(self.running.seqs) if self.running else [])
        return sum(len(s.todo) + s.max_tokens - s.generated for s in live)

    def _live(self) -> int:
        return len(self.prefilling) + (len(self.running) if self.running else 0)

    @property
    def busy(self) -> bool:
        return bool(self.prefilling or self.running)

    def _starting_together(self) -> bool:
        """Whether this turn's decode waits for the prompts now prefilling:
        so when none of the running sequences has handed out a token yet,
        none has waited before, and those prompts all finish this turn. Two
        agents that send at once then decode together from their first
        tokens, instead of the first standing still after its first token
        while the second prefills: it stands still the same time either
        way, but before its first token it costs its reply no end time.
        When it says so, it marks the running sequences as having waited."""
        running = self.running
        assert running is not None
        if not self.prefilling or any(s.generated or s.waited for s in running.seqs):
            return False
        if sum(len(s.todo) for s in self.prefilling) > self.step_size:
            return False  # a long prompt: the running ones decode between its chunks
        for seq in running.seqs:
            seq.waited = True
        return True

    def _take_requests(self) -> None:
        timeout = None if self.busy or self.backlog else 0.1  # None: do not wait
        while (request := self.gen._next_request(timeout)) is not None:
            self.backlog.append(request)
            timeout = None

    def _admit(self) -> None:
        if self.alone and not self.busy:
            self.alone = False
        provider = self.gen.model_provider
        while self.backlog and not self.alone:
            rqueue, request, args = self.backlog[0]  # (a test hook's poison raises here)
            images = any(upstream._image_parts(request.messages or []))
            alone = args.seed is not None or images or not provider.is_batchable
            if (alone and self.busy) or self._live() >= self.max_sequences:
                return
            self.backlog.popleft()
            if images:
                self.gen._serve_single((rqueue, request, args), self.stream)
                continue
            seq = self._start(rqueue, request, args)
            if seq is not None:
                self.alone = alone
                self.prefilling.append(seq)

    # ---- a request's start and end -------------------------------------

    def _start(self, rqueue, request, args) -> Sequence | None:
        """Tokenize (the engine's admission check runs there), look the prompt
        up in the prompt cache and hand the client its context."""
        gen, provider = self.gen, self.gen.model_provider
        tokenizer = provider.tokenizer
        try:
            prompt, _, _, initial_state, _ = gen._tokenize(tokenizer, request, args)
            stop_sequences, text_sm = gen._make_state_machine(
                provider.model_key, tokenizer, args.stop_words
            )
            cache, rest = gen.prompt_cache.fetch_nearest_cache(provider.model_key, prompt)
            if cache is None:
                cache = make_prompt_cache(provider.model)
            if not rest:  # all of it cached: feed the last token again for its logits
                trim_prompt_cache(cache, 1)
                rest = prompt[-1:]
            if args.seed is not None:
                mx.random.seed(args.seed)
            sampler = self._sampler(args, tokenizer)
            processors = upstream._make_logits_processors(args)
        except Exception as e:
            rqueue.put(e)
            return None
        cached = len(prompt) - len(rest)
        ctx = upstream.GenerationContext(
            has_tool_calling=tokenizer.has_tool_calling,
            has_thinking=tokenizer.has_thinking,
            tool_parser=tokenizer.tool_parser,
            text_sm=text_sm,
            initial_state=initial_state,
            prompt=prompt,
            prompt_cache_count=cached,
        )
        rqueue.put(ctx)
        seq = Sequence(
            rqueue=rqueue,
            ctx=ctx,
            ticket=getattr(request, "cache_ticket", None),
            cache=cache,
            key=list(prompt[:cached]),
            todo=list(rest),
            max_tokens=args.max_tokens,
            sampler=sampler,
            processors=processors,
            stop_matcher=stop_sequences.matcher(),
            detokenizer=tokenizer.detokenizer,
            eos_ids=frozenset(tokenizer.eos_token_ids),
            prompt_total=len(rest),
        )
        seq.progress()
        return seq

    def _sampler(self, args, tokenizer):
        """One sampler object per sampling setting, so a batch that shares one
        samples in a single call."""
        s = args.sampling
        key = (s.temperature, s.top_p, s.top_k, s.min_p, s.xtc_probability, s.xtc_threshold)
        if key not in self._samplers:
            self._samplers[key] = upstream._make_sampler(args, tokenizer)
        return self._samplers[key]

    def _finish(self, seq: Sequence, cache: list | None, error: BaseException | None = None):
        """End `seq`'s stream (with `error`, if any) and keep its cache."""
        seq.end(error)
        if not cache:
            return
        store = self.gen.prompt_cache
        begin = getattr(store, "begin", None)
        if begin is not None:
            begin(seq.ticket)
        store.insert_cache(self.gen.model_provider.model_key, seq.key, cache)

    def _failed(self, seqs: list[Sequence], error: BaseException) -> None:
        log.error("generation failed: %s", error)
        if self.gen.on_failure is not None:  # the engine repairs mlx's random state
            self.gen.on_failure()
        for seq in seqs:
            seq.end(error)

    # ---- the two kinds of work ---------------------------------------------

    def _decode(self) -> None:
        began = time.perf_counter()
        try:
            self._decode_step()
        finally:
            self.decode_seconds += time.perf_counter() - began

    def _decode_step(self) -> None:
        running = self.running
        assert running is not None and running.pending is not None
        seqs = list(running.seqs)
        try:
            sampled, failed = running.step()
            tokens = cast(list[int], running.pending.tolist())  # the step before this one
        except Exception as e:
            self._failed(seqs, e)
            self.running = Running(running.model, self.kv)
            return
        self.steps += 1
        self.batched_steps += len(seqs) > 1
        self.widest = max(self.widest, len(seqs))
        leaving = []
        for i, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
            if i not in failed:
                seq.key.append(token)
                seq.emit(token)
                self.decoded_tokens += 1
            if i in failed or seq.done or seq.stopped:
                leaving.append(i)
        caches = running.settle(leaving, sampled)
        for i in leaving:
            if i in failed:
                self._failed([seqs[i]], failed[i])
            else:
                self._finish(seqs[i], caches.get(i))
        if self.steps % 256 == 0:
            mx.clear_cache()

    def _prefill(self) -> None:
        """Up to prefill_step_size prompt tokens, from the prompts with the
        fewest tokens left first: several short prompts that arrive together
        all start in one turn, a long one advances one chunk a turn."""
        budget = self.step_size
        while self.prefilling and budget > 0:
            seq = min(self.prefilling, key=lambda s: len(s.todo))
            budget -= self._prefill_chunk(seq, budget)

    def _prefill_chunk(self, seq: Sequence, budget: int) -> int:
        """Feed `seq` up to `budget` prompt tokens; its last one samples its
        first token and it starts decoding. Returns the tokens fed."""
        running = self.running
        assert running is not None
        if seq.stopped:
            log.info("client left during the prefill; stopping it")
            self.prefilling.remove(seq)
            # What was prefilled stays cached: a client that timed out often retries.
            self._finish(seq, seq.cache, PrefillCancelled("the client left during the prefill"))
            return 0
        n = 1
        try:
            if len(seq.todo) > 1:
                chunk = seq.todo[: min(budget, len(seq.todo) - 1)]
                running.model(mx.array(chunk)[None], cache=seq.cache)
                running.quantize_single(seq.cache)
                mx.eval([c.state for c in seq.cache])
                seq.fed(chunk)
                seq.todo = seq.todo[len(chunk) :]
                mx.clear_cache()
                n = len(chunk)
            else:
                self.prefilling.remove(seq)
                running.join(seq, running.first_token(seq))
        except Exception as e:
            if seq in self.prefilling:
                self.prefilling.remove(seq)
            self._failed([seq], e)
            return n
        seq.progress()
        return n
