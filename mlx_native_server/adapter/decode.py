"""The sequences decoding now: one forward a step for all of them.

Alone, a sequence decodes on its own single-sequence cache, the same graph
`generate_step` builds (no mask, no padding). Two or more share batched
caches (batch_kv.py: full-precision or quantized, left-padded, with array
masks); a sequence that joins is merged in, one that leaves is extracted
back into a single cache for the prompt cache store, and when one is left
the batch becomes its single cache again. On CUDA a batched step's attention
runs in one fused kernel that starts each row at its own first key
(cuda_attention.py), as mlx fuses it only without a mask, and a step's
experts in two kernels a layer (cuda_experts.py), as mlx's gather_qmm runs a
tiled matmul kernel for them.

Steps are pipelined as in `generate_step`: `step()` queues the next forward
from the tokens sampled last time, before the caller reads those tokens, so
the host never waits on the device between two steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
from mlx_lm.generate import maybe_quantize_kv_cache

from . import batch_kv, cuda_attention, cuda_experts
from .sequence import Sequence


@dataclass(frozen=True)
class KVQuantization:
    bits: int | None  # None: full precision
    group_size: int
    start: int  # tokens a cache holds before it is quantized


class Running:
    def __init__(self, model, kv: KVQuantization):
        self.model = model
        self.kv = kv
        cuda_attention.install(model)  # on CUDA, batched steps attend in one fused kernel
        cuda_experts.install(model)  # and a step's experts run in two kernels a layer
        self.seqs: list[Sequence] = []
        self.cache: list | None = None  # the lone sequence's own cache, or batch layers
        self.pending: mx.array | None = None  # (B,) sampled, not yet fed back nor handed out

    def __len__(self) -> int:
        return len(self.seqs)

    def quantize_single(self, cache: list) -> None:
        kv = self.kv
        maybe_quantize_kv_cache(cache, kv.start, kv.group_size, kv.bits)

    def first_token(self, seq: Sequence) -> mx.array:
        """Feed the last prompt token of `seq` (its own cache) and sample its
        first token, as an unevaluated (1,) array."""
        tokens = seq.todo
        logits = self.model(mx.array(tokens)[None], cache=seq.cache)[:, -1, :]
        seq.fed(tokens)
        seq.todo = []
        if seq.processors:
            logits = seq.process(logits)
        self.quantize_single(seq.cache)
        y = seq.sampler(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        mx.async_eval(y)
        return y

    def join(self, seq: Sequence, y: mx.array) -> None:
        """Add `seq`, whose first sampled token is `y`, to the running set."""
        if not self.seqs:
            self.cache, self.pending = seq.cache, y
        else:
            assert self.cache is not None and self.pending is not None
            if len(self.seqs) == 1:
                self.cache = batch_kv.merge([self.cache, seq.cache])
            else:
                self.cache = batch_kv.extend(self.cache, [seq.cache])
            self.pending = mx.concatenate([self.pending, y])
        seq.cache = []
        self.seqs.append(seq)

    def step(self) -> tuple[mx.array, dict[int, BaseException]]:
        """Queue the next forward, fed with the pending tokens. Returns the
        tokens it will sample (B,), and the rows whose logits processors
        raised (they are to leave with their error)."""
        assert self.cache is not None and self.pending is not None
        inputs = self.pending
        logits = self.model(inputs[:, None], cache=self.cache)[:, -1, :]
        failed: dict[int, BaseException] = {}
        if any(s.processors for s in self.seqs):
            logits, failed = self._process(inputs, logits)
        if len(self.seqs) == 1:
            self.quantize_single(self.cache)
        else:
            kv = self.kv
            self.cache = batch_kv.maybe_quantize(self.cache, kv.start, kv.group_size, kv.bits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        sampler = self.seqs[0].sampler
        if all(s.sampler is sampler for s in self.seqs):
            sampled = sampler(logprobs)
        else:
            rows = [s.sampler(logprobs[i : i + 1]) for i, s in enumerate(self.seqs)]
            sampled = mx.concatenate(rows)
        mx.async_eval(sampled)
        return sampled, failed

    def _process(self, inputs: mx.array, logits: mx.array):
        rows, failed = [], {}
        for i, seq in enumerate(self.seqs):
            row = logits[i : i + 1]
            if seq.processors:
                seq.see(inputs[i : i + 1])
                try:
                    row = seq.process(row)
                except Exception as e:  # a processor's failure ends its own request only
                    failed[i] = e
            rows.append(row)
        return mx.concatenate(rows), failed

    def settle(self, indices: list[int], sampled: mx.array) -> dict[int, list]:
        """After a step: take the sequences at `indices` out of the running
        set; `sampled` (from step()) becomes the pending tokens of the rest.
        Returns the caches of those that left, by index."""
        assert self.cache is not None
        gone = set(indices)
        keep = [i for i in range(len(self.seqs)) if i not in gone]
        batched = len(self.seqs) > 1
        if not batched:
            caches = {0: self.cache} if gone else {}
        else:
            caches = {i: batch_kv.extract(self.cache, i) for i in sorted(gone)}
            if gone and keep:
                batch_kv.filter(self.cache, keep)
        self.seqs = [self.seqs[i] for i in keep]
        if not keep:
            self.cache, self.pending = None, None
            return caches
        self.pending = sampled[mx.array(keep)] if gone else sampled
        if batched and len(keep) == 1:
            self.cache = batch_kv.extract(self.cache, 0)  # alone again: no mask, no padding
        return caches
