"""Batched KV caches for the continuous-batching scheduler.

Each sequence is prefilled alone on mlx-lm's single caches (`KVCache`,
`QuantizedKVCache`); sequences that decode together have their per-layer
caches merged into batched ones (left padding, array masks), one forward for
all. mlx-lm has `BatchKVCache` but no quantized equivalent, so
`BatchQuantizedKVCache` mirrors its semantics over `mx.quantize` tuples. The
module functions are what the scheduler calls: merge, extend, extract,
filter, and maybe_quantize when a batch crosses `quantized_kv_start`.
"""

from __future__ import annotations

from typing import Any, cast

import mlx.core as mx
from mlx.utils import tree_map, tree_reduce
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import BatchKVCache, KVCache, QuantizedKVCache, _BaseCache

__all__ = ["BatchQuantizedKVCache", "extend", "extract", "filter", "maybe_quantize", "merge"]

Quantized = tuple[mx.array, ...]  # (packed uint32, scales, biases), as mx.quantize returns


def _int(x: mx.array) -> int:
    """A scalar integer array's value (mlx types `item()` as any scalar)."""
    return cast(int, x.item())


def _pad_tokens(parts: Quantized, left: int, right: int = 0) -> Quantized:
    """Zeros added before/after the token axis (2) of each part; zero packed
    words, scales and biases dequantize to 0, so the padding stays finite."""
    if not (left or right):
        return parts
    widths = [(0, 0), (0, 0), (left, right), (0, 0)]
    return tuple(mx.pad(x, widths) for x in parts)


def _tokens(parts: Quantized, start: int, stop: int) -> Quantized:
    return tuple(x[..., start:stop, :] for x in parts)


def _no_tokens(like: Quantized, rows: int) -> Quantized:
    """Parts shaped like `like`'s for `rows` rows and 0 tokens."""
    return tuple(mx.zeros((rows, x.shape[1], 0, x.shape[3]), x.dtype) for x in like)


def _cat(a: Quantized, b: Quantized, axis: int = 0) -> Quantized:
    return tuple(mx.concatenate([x, y], axis=axis) for x, y in zip(a, b, strict=True))


class BatchQuantizedKVCache(_BaseCache):
    """`BatchKVCache` with quantized storage: rows are left-padded so that
    every sequence ends at `_idx`; `offset[b]` is the tokens of row b
    (`_idx - left_padding[b]`), which RoPE uses per row."""

    step = 256

    def __init__(self, left_padding: list[int], group_size: int = 64, bits: int = 4):
        self.keys: Quantized | None = None
        self.values: Quantized | None = None
        self.left_padding = mx.array(left_padding)
        self.offset = mx.array([-p for p in left_padding])
        self._idx = 0
        self.group_size = group_size
        self.bits = bits

    def _alloc(self, B: int, H: int, n: int, dim: int, dtype: mx.Dtype) -> Quantized:
        """Zero storage for n tokens of head dimension `dim`."""
        per_word = 32 // self.bits  # values packed into one uint32
        return (
            mx.zeros((B, H, n, dim // per_word), dtype=mx.uint32),
            mx.zeros((B, H, n, dim // self.group_size), dtype=dtype),
            mx.zeros((B, H, n, dim // self.group_size), dtype=dtype),
        )

    def _grow(self, keys: mx.array, values: mx.array) -> None:
        """Room for `keys.shape[2]` more tokens, in steps of 256 like
        QuantizedKVCache (dropping any tail past `_idx` first)."""
        B, H, n, dk = keys.shape
        n_new = (self.step + n - 1) // self.step * self.step
        new_k = self._alloc(B, H, n_new, dk, keys.dtype)
        new_v = self._alloc(B, H, n_new, values.shape[3], keys.dtype)
        if self.keys is None or self.values is None:
            self.keys, self.values = new_k, new_v
            return
        self.keys = _cat(_tokens(self.keys, 0, self._idx), new_k, axis=2)
        self.values = _cat(_tokens(self.values, 0, self._idx), new_v, axis=2)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[Quantized, Quantized]:
        """Quantize (B, H, L, D) keys/values, write them at `_idx`, and
        return every row's quantized tokens up to the new `_idx`."""
        prev, n = self._idx, keys.shape[2]
        if self.keys is None or prev + n > self.keys[0].shape[2]:
            self._grow(keys, values)
        assert self.keys is not None and self.values is not None
        self._idx += n
        self.offset = self.offset + n
        for store, new in ((self.keys, keys), (self.values, values)):
            quantized = mx.quantize(new, group_size=self.group_size, bits=self.bits)
            for part, q in zip(store, quantized, strict=True):
                part[..., prev : self._idx, :] = q
        return self.keys_and_values()

    def keys_and_values(self) -> tuple[Quantized, Quantized]:
        assert self.keys is not None and self.values is not None
        return _tokens(self.keys, 0, self._idx), _tokens(self.values, 0, self._idx)

    def make_mask(self, N: int, return_array: bool = False, **kwargs: Any) -> mx.array:
        """Always an array mask: causal, and hiding each row's left padding."""
        return create_causal_mask(N, offset=self._idx, left_padding=self.left_padding, **kwargs)

    # What `state` holds, in order: BatchKVCache's, then QuantizedKVCache's format.
    _STATE = ("keys", "values", "offset", "left_padding", "_idx", "group_size", "bits")

    @property
    def state(self) -> tuple:
        return tuple(getattr(self, name) for name in self._STATE)

    @state.setter
    def state(self, v: tuple) -> None:
        for name, x in zip(self._STATE, v, strict=True):
            setattr(self, name, x)

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        n = min(self._idx, n)
        self._idx -= n
        self.offset = self.offset - n
        return n

    def size(self) -> int:
        return self._idx

    def empty(self) -> bool:
        return self.keys is None

    @property
    def nbytes(self) -> int:
        if self.keys is None:
            return 0
        return tree_reduce(lambda a, x: a + x.nbytes, (self.keys, self.values), 0)

    def filter(self, batch_indices: list[int] | mx.array) -> None:
        """Keep just these rows (in place), then drop the left padding
        they all share."""
        if self.keys is not None and self.values is not None:
            self.keys = tuple(x[batch_indices] for x in self.keys)
            self.values = tuple(x[batch_indices] for x in self.values)
        self.offset = self.offset[batch_indices]
        self.left_padding = self.left_padding[batch_indices]
        shared = _int(self.left_padding.min())
        if shared > 0:
            if self.keys is not None and self.values is not None:
                self.keys = _tokens(self.keys, shared, self.keys[0].shape[2])
                self.values = _tokens(self.values, shared, self.values[0].shape[2])
            self._idx -= shared
            self.left_padding = self.left_padding - shared

    def extend(self, other: BatchQuantizedKVCache) -> None:
        """Append other's rows (in place): both are right-justified to the
        larger `_idx` and zero-padded to the same buffer length."""
        if (other.group_size, other.bits) != (self.group_size, self.bits):
            raise ValueError(
                f"cannot extend a {self.bits}-bit/group {self.group_size} batch cache "
                f"with a {other.bits}-bit/group {other.group_size} one"
            )
        if self.keys is None and other.keys is None:
            self.left_padding = mx.concatenate([self.left_padding, other.left_padding])
            self.offset = mx.concatenate([self.offset, other.offset])
            return
        full = self if self.keys is not None else other
        assert full.keys is not None and full.values is not None
        like_k, like_v = full.keys, full.values
        max_idx = max(self._idx, other._idx)
        max_size = max(c.keys[0].shape[2] for c in (self, other) if c.keys is not None)

        def justified(c: BatchQuantizedKVCache) -> tuple:
            k, v = c.keys, c.values
            if k is None or v is None:  # an empty side: its rows with 0 tokens
                rows = c.offset.shape[0]
                k, v = _no_tokens(like_k, rows), _no_tokens(like_v, rows)
            left = max_idx - c._idx
            right = max_size - k[0].shape[2] - left
            if right < 0:  # only unused tail past _idx is cut (max_idx <= max_size)
                k, v = _tokens(k, 0, right), _tokens(v, 0, right)
                right = 0
            return _pad_tokens(k, left, right), _pad_tokens(v, left, right), c.left_padding + left

        (k1, v1, p1), (k2, v2, p2) = justified(self), justified(other)
        self.keys, self.values = _cat(k1, k2), _cat(v1, v2)
        self.offset = mx.concatenate([self.offset, other.offset])
        self.left_padding = mx.concatenate([p1, p2])
        self._idx = max_idx

    def extract(self, idx: int) -> QuantizedKVCache:
        """Row idx as a single cache, without its padding. Exact: the
        quantization groups run along head_dim, never across tokens."""
        cache = QuantizedKVCache(group_size=self.group_size, bits=self.bits)
        if self.keys is None or self.values is None:
            return cache
        padding = _int(self.left_padding[idx])
        cache.keys, cache.values = tree_map(
            lambda x: mx.contiguous(x[idx : idx + 1, :, padding : self._idx]),
            (self.keys, self.values),
        )
        cache.offset = self._idx - padding
        return cache

    @classmethod
    def merge(cls, caches: list[QuantizedKVCache]) -> BatchQuantizedKVCache:
        """One batch of these single caches, left-padded to the longest
        (empty ones allowed); they must share group_size and bits."""
        formats = {(c.group_size, c.bits) for c in caches}
        if len(formats) != 1:
            raise ValueError(f"cannot batch quantized caches of (group_size, bits) {formats}")
        ((group_size, bits),) = formats
        longest = max(c.offset for c in caches)
        batch = cls([longest - c.offset for c in caches], group_size, bits)
        full = [c for c in caches if c.offset > 0]
        if not full:
            return batch

        def row(c: QuantizedKVCache) -> tuple[Quantized, Quantized]:
            """c's tokens, left-padded to `longest`; an empty cache borrows
            a full one's shapes (taking 0 of its tokens)."""
            src: Any = c if c.offset > 0 else full[0]
            pad = longest - c.offset
            return (
                _pad_tokens(_tokens(src.keys, 0, c.offset), pad),
                _pad_tokens(_tokens(src.values, 0, c.offset), pad),
            )

        keys, values = zip(*(row(c) for c in caches), strict=True)
        batch.keys = tuple(mx.concatenate(list(parts)) for parts in zip(*keys, strict=True))
        batch.values = tuple(mx.concatenate(list(parts)) for parts in zip(*values, strict=True))
        batch.offset = batch.offset + longest
        batch._idx = longest
        return batch

    @classmethod
    def from_batch(cls, cache: BatchKVCache, group_size: int, bits: int) -> BatchQuantizedKVCache:
        """A quantized copy of a full-precision batch cache (same rows,
        padding and offsets), for a batch crossing `quantized_kv_start`."""
        batch = cls([], group_size, bits)
        batch.left_padding, batch.offset, batch._idx = cache.left_padding, cache.offset, cache._idx
        if cache.keys is not None:
            k, v = cache.keys_and_values()
            batch.keys = tuple(mx.quantize(k, group_size=group_size, bits=bits))
            batch.values = tuple(mx.quantize(v, group_size=group_size, bits=bits))
        return batch


def _merge_layer(layer: list) -> Any:
    """One layer of B sequences as a batched layer (see `merge`)."""
    quantized = [c for c in layer if isinstance(c, QuantizedKVCache)]
    if all(isinstance(c, (KVCache, QuantizedKVCache)) for c in layer):
        if not quantized:
            return BatchKVCache.merge(layer)
        fmt = {"group_size": quantized[0].group_size, "bits": quantized[0].bits}
        return BatchQuantizedKVCache.merge(
            [c.to_quantized(**fmt) if isinstance(c, KVCache) else c for c in layer]
        )
    kinds = sorted({type(c).__name__ for c in layer})
    if len(kinds) == 1 and hasattr(layer[0], "merge"):  # e.g. CacheList, ArraysCache
        return layer[0].merge(layer)
    raise ValueError(f"cannot batch a cache layer of type {' + '.join(kinds)}")


def merge(caches: list[list]) -> list:
    """Batch B sequences: `caches[b]` is sequence b's per-layer cache list;
    returns one batched layer per layer. All-KVCache layers become a
    BatchKVCache; if any is quantized, the full-precision ones are quantized
    to its format and the layer is a BatchQuantizedKVCache. Other cache types
    use their own `merge`; one without it raises ValueError."""
    return [_merge_layer([seq[i] for seq in caches]) for i in range(len(caches[0]))]


def extend(batch: list, caches: list[list]) -> list:
    """Add more sequences (their per-layer single caches) to a batch. A
    quantized batch layer quantizes the newcomers to its format; a
    full-precision one meeting a quantized newcomer is quantized first.
    Returns the batch's layers, some possibly new objects."""
    if not caches:
        return batch
    out = []
    for i, layer in enumerate(batch):
        incoming = [seq[i] for seq in caches]
        if isinstance(layer, BatchQuantizedKVCache):
            incoming = [
                c.to_quantized(group_size=layer.group_size, bits=layer.bits)
                if isinstance(c, KVCache)
                else c
                for c in incoming
            ]
        other = _merge_layer(incoming)
        if isinstance(layer, BatchKVCache) and isinstance(other, BatchQuantizedKVCache):
            layer = BatchQuantizedKVCache.from_batch(layer, other.group_size, other.bits)
        layer.extend(other)
        out.append(layer)
    return out


def extract(batch: list, idx: int) -> list:
    """Row idx of the batch as that sequence's single caches, one per layer."""
    return [layer.extract(idx) for layer in batch]


def filter(batch: list, keep: list[int]) -> None:
    """Keep just the rows `keep` (non-empty; drop the batch instead), in place."""
    for layer in batch:
        layer.filter(keep)


def maybe_quantize(batch: list, start: int, group_size: int, bits: int | None) -> list:
    """The batch with each BatchKVCache layer whose `_idx >= start` quantized
    (the batched `quantized_kv_start`); unchanged when bits is None."""
    if bits is None:
        return batch
    return [
        BatchQuantizedKVCache.from_batch(c, group_size, bits)
        if isinstance(c, BatchKVCache) and c._idx >= start
        else c
        for c in batch
    ]
