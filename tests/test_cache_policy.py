"""The prompt-cache policy (issue 6): pure rules, then the memory store that
applies them, with small real KV states and no model."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from mlx_native_server.cache import policy
from mlx_native_server.cache.store import PromptCacheStore, Ticket

MODEL = ("demo", None, None)
SYSTEM = list(range(1000, 4000))  # a 3000-token system prompt and tools


def kv(n_tokens: int, layers: int = 2) -> list:
    """A KV state of n_tokens (1 KiB a token a layer), as upstream inserts it."""
    cache = [KVCache() for _ in range(layers)]
    for c in cache:
        x = mx.ones((1, 2, n_tokens, 64), dtype=mx.float16)
        c.update_and_fetch(x, x)
    return cache


def entry(key, n, last_used, nbytes=None, session=None, superseded=False):
    return policy.Entry(key, n, nbytes if nbytes is not None else n, last_used, session, superseded)


# ---- pure rules ------------------------------------------------------------


def test_common_prefix_and_usable_prefix():
    assert policy.common_prefix([1, 2, 3, 4], [1, 2, 9]) == 2
    assert policy.common_prefix([1, 2], [1, 2, 3]) == 2
    assert policy.common_prefix([], [1]) == 0
    # at least one prompt token is left to compute
    assert policy.usable_prefix(entry_tokens=10, common=10, prompt_tokens=10, trimmable=True) == 9
    # a longer entry that diverged serves its common prefix if it can be trimmed
    assert policy.usable_prefix(20, 12, 30, trimmable=True) == 12
    assert policy.usable_prefix(20, 12, 30, trimmable=False) == 0
    assert policy.usable_prefix(20, 20, 30, trimmable=False) == 20


def test_divergence_is_reported_only_when_the_prompt_left_the_entry():
    assert policy.divergence(entry_tokens=100, common=100, prompt_tokens=150) is None
    assert policy.divergence(entry_tokens=100, common=80, prompt_tokens=150) == 80


def test_side_requests_are_evicted_before_the_session():
    session = entry("session", 9000, last_used=1)
    sides = [entry(f"title{i}", 60, last_used=2 + i) for i in range(3)]
    limits = policy.Limits(max_entries=2, max_bytes=1 << 40)
    assert policy.victims([session, *sides], limits) == ["title0", "title1"]


def test_byte_budget_is_respected():
    entries = [entry(i, 5000, last_used=i, nbytes=400) for i in range(5)]
    out = policy.victims(entries, policy.Limits(max_entries=10, max_bytes=1000))
    assert out == [0, 1, 2]  # 2 x 400 <= 1000, least recently used gone first


def test_lru_among_sessions_and_superseded_turns_first():
    a, b, c = (entry(k, 9000, last_used=t) for k, t in (("a", 3), ("b", 1), ("c", 2)))
    old_turn = entry("a-previous-turn", 8900, last_used=5, superseded=True)
    limits = policy.Limits(max_entries=2, max_bytes=1 << 40)
    assert policy.victims([a, b, c, old_turn], limits) == ["a-previous-turn", "b"]


def test_superseded_needs_a_long_shared_prefix_and_honours_session_hints():
    # the previous turn forks from the new one just before its own reply
    assert policy.superseded_by(None, None, old_tokens=9000, common=8900)
    # a side request of the same session shares only a few tokens
    assert not policy.superseded_by("s1", "s1", old_tokens=60, common=10)
    # two sessions sharing the system prompt never supersede each other...
    assert not policy.superseded_by("s1", "s2", old_tokens=9000, common=8900)
    # ...but a session's own fork (compaction, rewind) does
    assert policy.superseded_by("s1", "s1", old_tokens=20000, common=8000)
    assert not policy.superseded_by(None, None, old_tokens=20000, common=8000)


def test_choose_source_prefers_disk_only_for_a_real_gain():
    assert policy.choose_source(0, 0) == "none"
    assert policy.choose_source(5000, 5100, min_gain=256) == "memory"
    assert policy.choose_source(5000, 9000, min_gain=256) == "disk"
    assert policy.choose_source(0, 3000, min_gain=256) == "disk"


# ---- the memory store --------------------------------------------------------


def serve(store: PromptCacheStore, tokens: list[int], reply: int = 20, session=None):
    """What upstream does with one request: look up, compute the rest, insert."""
    store.begin(Ticket(session=session))
    cache, rest = store.fetch_nearest_cache(MODEL, tokens)
    reused = len(tokens) - len(rest)
    full = tokens + list(range(7, 7 + reply))
    if cache is None:
        cache = kv(len(full))
    else:
        x = mx.ones((1, 2, len(full) - reused, 64), dtype=mx.float16)
        for c in cache:
            c.update_and_fetch(x, x)
    store.insert_cache(MODEL, full, cache)
    return reused


def test_store_keeps_the_session_warm_across_side_requests():
    store = PromptCacheStore(max_entries=2, max_bytes=1 << 40)
    title = [1, 2, 3, 4, 5]
    conversation = SYSTEM + [50, 51]
    for turn in range(4):
        serve(store, title + [turn])  # a new title request each turn
        reused = serve(store, conversation)
        if turn:
            assert reused >= len(conversation) - 40
        conversation = conversation + list(range(7, 17)) + [60 + turn] * 30
    assert max(len(i.tokens) for i in store.items.values()) > len(SYSTEM)


def test_store_respects_the_byte_budget():
    per_token = 2 * 2 * 2 * 64 * 2  # layers x (k, v) x heads x head_dim x fp16 bytes
    budget = 3000 * per_token
    store = PromptCacheStore(max_entries=8, max_bytes=budget)
    for i in range(6):
        serve(store, [i] * 700)
        assert store.nbytes <= budget
    assert len(store) >= 2


def test_store_evicts_the_least_recently_used_session():
    store = PromptCacheStore(max_entries=2, max_bytes=1 << 40)
    a, b, c = ([k] * 2500 for k in (1, 2, 3))
    serve(store, a)
    serve(store, b)
    serve(store, a + [9])  # a is used again: b is now the oldest
    serve(store, c)
    kept = {int(i.tokens[0]) for i in store.items.values()}
    assert kept == {1, 3}


def test_store_drops_previous_turns_and_records_the_lookup():
    store = PromptCacheStore(max_entries=8, max_bytes=1 << 40)
    serve(store, SYSTEM, session="s")
    ticket = Ticket(session="s")
    store.begin(ticket)
    prompt = SYSTEM + [99] * 50  # the reply was re-rendered differently
    cache, rest = store.fetch_nearest_cache(MODEL, prompt)
    assert ticket.lookup.source == "memory"
    assert ticket.lookup.reused == len(SYSTEM) == len(prompt) - len(rest)
    assert ticket.lookup.diverged_at == len(SYSTEM)
    store.insert_cache(MODEL, prompt + [5], kv(len(prompt) + 1))  # the turn's full KV state
    assert store.stats()["memory_hits"] == 1
    assert sum(not i.superseded for i in store.items.values()) == 1


def test_store_with_no_entries_keeps_nothing():
    store = PromptCacheStore(max_entries=0, max_bytes=1 << 40)
    serve(store, SYSTEM)
    assert len(store) == 0 and store.nbytes == 0
