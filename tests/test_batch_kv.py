"""adapter/batch_kv.py: batched quantized KV caches, on random tensors and on
the demo model (one batched decode step against the same step done solo)."""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx_lm.models.base import scaled_dot_product_attention
from mlx_lm.models.cache import (
    BatchKVCache,
    ChunkedKVCache,
    KVCache,
    QuantizedKVCache,
    make_prompt_cache,
)
from mlx_lm.utils import load

from mlx_native_server.adapter import batch_kv
from mlx_native_server.adapter.batch_kv import BatchQuantizedKVCache

H, D = 2, 64  # kv heads and head_dim, as the demo model
GROUP, BITS = 64, 4


def kv(n: int, rows: int = 1, seed: int = 0) -> tuple[mx.array, mx.array]:
    mx.random.seed(seed)
    return mx.random.normal((rows, H, n, D)), mx.random.normal((rows, H, n, D))


def quantized(n: int, seed: int = 0) -> QuantizedKVCache:
    """A single quantized cache of n random tokens (none when n is 0)."""
    cache = QuantizedKVCache(group_size=GROUP, bits=BITS)
    if n:
        cache.update_and_fetch(*kv(n, seed=seed))
    return cache


def dequantized(parts) -> mx.array:
    return mx.dequantize(*parts, group_size=GROUP, bits=BITS)


def assert_same(a: QuantizedKVCache, b: QuantizedKVCache) -> None:
    """Same length and bit-identical tokens (dequantized)."""
    assert a.offset == b.offset
    for x, y in zip(a.keys_and_values(), b.keys_and_values(), strict=True):
        assert mx.array_equal(dequantized(x), dequantized(y))


def test_merge_then_extract_gives_back_each_cache():
    singles = [quantized(5, seed=1), quantized(300, seed=2), quantized(0)]
    batch = BatchQuantizedKVCache.merge(singles)
    assert batch.left_padding.tolist() == [295, 0, 300]
    assert batch.offset.tolist() == [5, 300, 0]
    assert batch.size() == 300
    keys, values = batch.keys_and_values()
    assert keys[0].shape == (3, H, 300, D * BITS // 32) and values[1].shape == (3, H, 300, 1)
    for i in range(2):
        assert_same(batch.extract(i), singles[i])
    assert batch.extract(2).offset == 0
    assert mx.all(dequantized(keys)[2] == 0)  # padding dequantizes to zeros, not NaN


def test_merge_refuses_mixed_formats():
    other = QuantizedKVCache(group_size=32, bits=8)
    other.update_and_fetch(*kv(3))
    with pytest.raises(ValueError, match="group_size, bits"):
        BatchQuantizedKVCache.merge([quantized(3), other])


def test_extend_filter_extract_round_trip():
    singles = [quantized(5, seed=1), quantized(20, seed=2), quantized(300, seed=3)]
    batch = batch_kv.merge([[c] for c in singles[:2]])
    batch = batch_kv.extend(batch, [[singles[2]]])
    (layer,) = batch
    assert layer.left_padding.tolist() == [295, 280, 0]
    assert layer.offset.tolist() == [5, 20, 300]
    for i, single in enumerate(singles):
        assert_same(batch_kv.extract(batch, i)[0], single)

    batch_kv.filter(batch, [0, 1])  # the 280 padding both rows share goes
    assert layer.left_padding.tolist() == [15, 0] and layer.size() == 20
    assert_same(layer.extract(0), singles[0])
    assert_same(layer.extract(1), singles[1])
    batch_kv.filter(batch, [0])
    assert layer.left_padding.tolist() == [0] and layer.size() == 5
    assert_same(layer.extract(0), singles[0])


def test_extend_with_and_into_empty_rows():
    batch = BatchQuantizedKVCache.merge([quantized(0)])
    batch.extend(BatchQuantizedKVCache.merge([quantized(7, seed=1)]))
    assert batch.left_padding.tolist() == [7, 0] and batch.offset.tolist() == [0, 7]
    assert_same(batch.extract(1), quantized(7, seed=1))
    batch.extend(BatchQuantizedKVCache.merge([quantized(0)]))
    assert batch.left_padding.tolist() == [7, 0, 7] and batch.size() == 7


def test_update_and_fetch_across_the_step_boundary():
    singles = [quantized(250, seed=1), quantized(100, seed=2)]
    batch = BatchQuantizedKVCache.merge(singles)
    new_k, new_v = kv(10, rows=2, seed=3)
    keys, _ = batch.update_and_fetch(new_k, new_v)  # 260 tokens > the 256 step
    assert keys[0].shape[2] == 260 and batch.offset.tolist() == [260, 110]
    for i, single in enumerate(singles):
        single.update_and_fetch(new_k[i : i + 1], new_v[i : i + 1])
        assert_same(batch.extract(i), single)

    fresh = BatchQuantizedKVCache([0, 0], group_size=GROUP, bits=BITS)
    for n in (255, 1, 1):  # fills one step exactly, then grows by one
        fresh.update_and_fetch(*kv(n, rows=2))
    assert fresh.size() == 257 and fresh.keys[0].shape[2] == 512
    assert fresh.trim(2) == 2 and fresh.offset.tolist() == [255, 255]


def attend(q: mx.array, keys, values, cache, mask) -> mx.array:
    # A copy of q: upstream scales the queries in place (`queries *= scale`).
    return scaled_dot_product_attention(q + 0, keys, values, cache=cache, scale=D**-0.5, mask=mask)


def test_batched_attention_matches_solo():
    """The padding mask hides exactly the padding: each row's attention
    output equals the solo one."""
    singles = [quantized(9, seed=1), quantized(40, seed=2)]
    batch = BatchQuantizedKVCache.merge(singles)
    q = mx.random.normal((2, 4, 1, D))
    new_k, new_v = kv(1, rows=2, seed=3)
    mask = batch.make_mask(1)  # before the update, as the models do
    out = attend(q, *batch.update_and_fetch(new_k, new_v), batch, mask)
    for i, single in enumerate(singles):
        k, v = single.update_and_fetch(new_k[i : i + 1], new_v[i : i + 1])
        solo = attend(q[i : i + 1], k, v, single, None)
        assert mx.allclose(out[i : i + 1], solo, atol=1e-5)


def test_merge_of_a_mixture_quantizes():
    full = KVCache()
    full.update_and_fetch(*kv(6, seed=1))
    (layer,) = batch_kv.merge([[full], [quantized(3, seed=2)]])
    assert isinstance(layer, BatchQuantizedKVCache)
    assert (layer.group_size, layer.bits) == (GROUP, BITS)
    assert_same(layer.extract(0), full.to_quantized(group_size=GROUP, bits=BITS))


def test_extend_quantizes_whichever_side_is_full_precision():
    full = KVCache()
    full.update_and_fetch(*kv(6, seed=1))
    batch = batch_kv.extend(batch_kv.merge([[full]]), [[quantized(3, seed=2)]])
    assert isinstance(batch[0], BatchQuantizedKVCache)
    batch = batch_kv.extend(batch, [[full]])
    assert isinstance(batch[0], BatchQuantizedKVCache) and batch[0].offset.tolist() == [6, 3, 6]


def test_unbatchable_layers_are_named():
    chunked = ChunkedKVCache(chunk_size=8)
    with pytest.raises(ValueError, match="ChunkedKVCache"):
        batch_kv.merge([[chunked], [chunked]])
    with pytest.raises(ValueError, match="ChunkedKVCache \\+ KVCache"):
        batch_kv.merge([[chunked], [KVCache()]])


def test_state_round_trips():
    batch = BatchQuantizedKVCache.merge([quantized(4), quantized(9, seed=1)])
    copy = BatchQuantizedKVCache.from_state(batch.state)
    assert copy.offset.tolist() == [4, 9] and (copy.group_size, copy.bits) == (GROUP, BITS)
    assert batch.nbytes > 0 and copy.nbytes == batch.nbytes
    assert BatchQuantizedKVCache([0]).nbytes == 0


# -- the demo model ------------------------------------------------------------

PROMPTS = [[1, 5, 9, 33, 70, 120, 7], [4, 2, 88, 61, 19, 240, 3, 9, 11, 17, 52, 99, 6, 300]]


@pytest.fixture(scope="module")
def model(demo_model):
    return load(str(demo_model))[0]


def prefill(model, prompt: list[int], quantize: bool) -> tuple[list, int]:
    """The prompt run alone; its cache and greedy next token."""
    if quantize:
        cache = [QuantizedKVCache(group_size=GROUP, bits=BITS) for _ in model.layers]
    else:
        cache = make_prompt_cache(model)
    logits = model(mx.array([prompt]), cache=cache)
    return cache, int(logits[0, -1].argmax().item())


def batched_vs_solo(model, batch: list, solo: list[list], tokens: list[int]) -> float:
    """One decode step batched and solo; argmax must agree. The largest
    logit difference across rows."""
    logits = model(mx.array([[t] for t in tokens]), cache=batch)
    worst = 0.0
    for i, (cache, t) in enumerate(zip(solo, tokens, strict=True)):
        ref = model(mx.array([[t]]), cache=cache)
        assert logits[i, -1].argmax().item() == ref[0, -1].argmax().item()
        worst = max(worst, mx.abs(logits[i, -1] - ref[0, -1]).max().item())
    return worst


@pytest.mark.parametrize("quantize", [True, False], ids=["quantized", "full"])
def test_batched_decode_matches_solo(model, quantize):
    caches, tokens = zip(*(prefill(model, p, quantize) for p in PROMPTS), strict=True)
    solo = [prefill(model, p, quantize)[0] for p in PROMPTS]  # own copies to step alone
    batch = batch_kv.merge(list(caches))
    kind = BatchQuantizedKVCache if quantize else BatchKVCache
    assert all(isinstance(layer, kind) for layer in batch)
    worst = batched_vs_solo(model, batch, solo, list(tokens))
    print(f"{'quantized' if quantize else 'full'}: max |logit diff| {worst:.3g}")
    assert worst < 1e-3
    for i, cache in enumerate(solo):  # the batch's rows are the solo caches, one token on
        for row, own in zip(batch_kv.extract(batch, i), cache, strict=True):
            assert row.offset == own.offset == len(PROMPTS[i]) + 1


def test_maybe_quantize_at_the_threshold(model):
    caches, tokens = zip(*(prefill(model, p, False) for p in PROMPTS), strict=True)
    batch = batch_kv.merge(list(caches))
    longest = max(len(p) for p in PROMPTS)
    assert batch_kv.maybe_quantize(batch, 0, GROUP, None) is batch
    assert batch_kv.maybe_quantize(batch, longest + 1, GROUP, BITS) == batch
    converted = batch_kv.maybe_quantize(batch, longest, GROUP, BITS)
    assert all(isinstance(layer, BatchQuantizedKVCache) for layer in converted)
    assert converted[0].offset.tolist() == [len(p) for p in PROMPTS]

    step = mx.array([[t] for t in tokens])
    ref, out = model(step, cache=batch), model(step, cache=converted)
    worst = mx.abs(out - ref).max().item()
    print(f"maybe_quantize: max |logit diff| vs full precision {worst:.3g}")
    assert mx.array_equal(out.argmax(-1), ref.argmax(-1))
    assert worst < 0.1
