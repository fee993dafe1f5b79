"""The disk tier of the prompt cache (issue 6): exact round trips, atomic
writes, corrupt and foreign files, the size cap, and the store spilling to it."""

from __future__ import annotations

import logging
import shutil

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache, QuantizedKVCache

from conftest import small_kv
from mlx_native_server.cache.disk import DiskTier
from mlx_native_server.cache.fingerprint import model_fingerprint
from mlx_native_server.cache.store import PromptCacheStore, Ticket

COMPAT = {
    "fingerprint": "f" * 64,
    "mlx_lm_version": "0.32.2",
    "kv_bits": 4,
    "kv_group_size": 64,
    "quantized_kv_start": 0,
}
MODEL = ("demo", None, None)


@pytest.fixture(scope="module")
def model(demo_model):
    from mlx_lm import load

    loaded, _tokenizer = load(str(demo_model))
    return loaded


def prefill(model, tokens: list[int], quantized: bool) -> list:
    n = len(model.layers)
    cache = (
        [QuantizedKVCache(group_size=64, bits=4) for _ in range(n)]
        if quantized
        else [KVCache() for _ in range(n)]
    )
    model(mx.array([tokens]), cache=cache)
    mx.eval([c.state for c in cache])
    return cache


def next_logits(model, cache, token: int) -> np.ndarray:
    out = model(mx.array([[token]]), cache=cache).astype(mx.float32)
    return np.array(out[0, -1])


@pytest.mark.parametrize("quantized", [True, False], ids=["kv4", "fp16"])
def test_round_trip_restores_identical_kv(model, tmp_path, quantized):
    tokens = [int(t) for t in np.random.default_rng(0).integers(10, 900, 300)]
    cache = prefill(model, tokens, quantized)
    disk = DiskTier(tmp_path, COMPAT, 1 << 30)
    assert disk.write(tokens, cache, session="s1")
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # renamed into place

    fresh = DiskTier(tmp_path, COMPAT, 1 << 30)  # as after a restart
    entry, usable, _ = fresh.best(tokens + [42])
    assert entry is not None and usable == len(tokens) and entry.session == "s1"
    loaded = fresh.load(entry)
    assert [type(c) for c in loaded] == [type(c) for c in cache]
    np.testing.assert_array_equal(next_logits(model, loaded, 42), next_logits(model, cache, 42))


def test_a_partial_match_is_trimmed_to_the_common_prefix(model, tmp_path):
    tokens = [int(t) for t in np.random.default_rng(1).integers(10, 900, 1000)]
    disk = DiskTier(tmp_path, COMPAT, 1 << 30)
    disk.write(tokens, prefill(model, tokens, quantized=True))
    store = PromptCacheStore(max_entries=4, max_bytes=1 << 30, disk=disk)
    ticket = Ticket()
    store.begin(ticket)
    prompt = tokens[:600] + [5, 6, 7]
    cache, rest = store.fetch_nearest_cache(MODEL, prompt)
    assert rest == [5, 6, 7] and cache[0].offset == 600
    assert (ticket.lookup.source, ticket.lookup.reused, ticket.lookup.diverged_at) == (
        "disk",
        600,
        600,
    )
    reference = prefill(model, tokens[:600], quantized=True)
    np.testing.assert_allclose(
        next_logits(model, cache, 5), next_logits(model, reference, 5), rtol=1e-3, atol=1e-3
    )


def test_truncated_and_garbage_files_are_skipped_and_removed(tmp_path, caplog):
    disk = DiskTier(tmp_path, COMPAT, 1 << 30)
    disk.write(list(range(100)), small_kv(100))
    disk.write(list(range(500, 600)), small_kv(100))
    first, second = sorted(tmp_path.glob("*.safetensors"))
    first.write_bytes(first.read_bytes()[:-100])  # a write cut short
    second.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with caplog.at_level(logging.WARNING):
        fresh = DiskTier(tmp_path, COMPAT, 1 << 30)
    assert fresh.entries == {} and list(tmp_path.iterdir()) == []
    assert caplog.text.count("unreadable") == 2


def test_a_file_that_breaks_after_indexing_is_removed_on_load(tmp_path, caplog):
    disk = DiskTier(tmp_path, COMPAT, 1 << 30)
    disk.write(list(range(100)), small_kv(100))
    entry, _, _ = disk.best(list(range(120)))
    entry.path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        assert disk.load(entry) is None
    assert not entry.path.exists() and "unreadable" in caplog.text


@pytest.mark.parametrize("field", ["fingerprint", "mlx_lm_version", "kv_bits"])
def test_entries_of_another_model_or_version_are_never_used(tmp_path, field):
    DiskTier(tmp_path, COMPAT, 1 << 30).write(list(range(100)), small_kv(100))
    other = DiskTier(tmp_path, {**COMPAT, field: "something else"}, 1 << 30)
    assert other.best(list(range(120)))[0] is None
    assert other.stats()["foreign_entries"] == 1 and len(list(tmp_path.iterdir())) == 1


def test_size_cap_evicts_least_recently_used(tmp_path):
    disk = DiskTier(tmp_path, COMPAT, 1 << 30)
    disk.write([1] * 3000, small_kv(3000))
    size = next(tmp_path.iterdir()).stat().st_size
    disk.max_bytes = int(size * 2.5)
    disk.write([2] * 3000, small_kv(3000))
    disk.write([3] * 3000, small_kv(3000))
    assert sorted(int(e.tokens[0]) for e in disk.entries.values()) == [2, 3]
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= disk.max_bytes


def test_store_spills_evictions_to_disk_and_loads_them_back(tmp_path):
    disk = DiskTier(tmp_path, COMPAT, 1 << 30)
    store = PromptCacheStore(max_entries=1, max_bytes=1 << 30, disk=disk)
    a, b = [1] * 3000, [2] * 3000
    store.insert_cache(MODEL, a, small_kv(3000))
    store.insert_cache(MODEL, b, small_kv(3000))  # evicts a to disk
    assert len(store) == 1 and len(disk.entries) == 1
    ticket = Ticket()
    store.begin(ticket)
    cache, rest = store.fetch_nearest_cache(MODEL, a + [5])
    assert ticket.lookup.source == "disk" and rest == [5] and cache[0].offset == 3000
    assert store.persist() == 1  # b, the live entry
    assert len(disk.entries) == 2


def test_fingerprint_follows_tokenizer_and_template(demo_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(demo_model, copy)
    assert model_fingerprint(copy) == model_fingerprint(demo_model)
    (copy / "chat_template.jinja").write_text("{{ messages }}")
    assert model_fingerprint(copy) != model_fingerprint(demo_model)
