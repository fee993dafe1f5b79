"""The runtime memory guard (KV_CACHE_QUANTIZATION.md, "Memory plan"): before
each prefill, engine.fit_or_spill spills the prompt cache to its disk tier
until the request fits the plan's limit, else refuses it with
MemoryExhausted. Here with a real PromptCacheStore, real mlx arrays and a
real plan; then through the engine's generation thread; then a real server
under a memory limit that fits. A server whose plan start accepted cannot be
made to refuse one request (the plan counts the KV cache at the context cap
and a runtime that mlx's memory never holds), so the refusal is driven
through the engine, with the plan's limit set below the weights."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time

import mlx.core as mx
import pytest
import requests
from mlx_lm.models.cache import KVCache

from mlx_native_server.cache.disk import DiskTier
from mlx_native_server.cache.store import PromptCacheStore
from mlx_native_server.core import config
from mlx_native_server.core.paths import Paths
from mlx_native_server.engine.engine import Engine, fit_or_spill
from mlx_native_server.engine.types import ChatRequest, MemoryExhausted
from mlx_native_server.memory import device as plan_cmd
from mlx_native_server.memory import plan as mp

COMPAT = {
    "fingerprint": "f" * 64,
    "mlx_lm_version": "0.32.2",
    "kv_bits": 0,
    "kv_group_size": 64,
    "quantized_kv_start": 0,
}
MODEL = ("demo", None, None)
ENTRIES, ENTRY_TOKENS = 4, 2048
PROMPT, MOST = 2048, 2048  # the request being admitted: prompt tokens, max_tokens
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def plan(demo_model) -> mp.Plan:
    """The demo model's plan on a roomy CPU machine; tests set their own limit."""
    config_json = json.loads((demo_model / "config.json").read_text())
    knobs = mp.Knobs(
        max_tokens=4096,
        kv_bits=0,
        kv_group_size=64,
        quantized_kv_start=0,
        prompt_cache_bytes="auto",
        prompt_cache_size=ENTRIES,
        prefill_step_size=2048,
    )
    device = mp.Device("linux-cpu", 64 * 2**30, 32 * 2**30, "of RAM")
    return mp.make_plan(config_json, plan_cmd.weight_bytes(demo_model), knobs, device)


def request_bytes(plan: mp.Plan, prompt: int, most: int) -> int:
    """What request_fits counts for a request beside the memory in use: the
    least limit it fits with nothing else in use (a binary search)."""
    lo, hi = 0, 1 << 40
    while lo < hi:
        mid = (lo + hi) // 2
        if mp.request_fits(dataclasses.replace(plan, limit=mid), 0, prompt, most):
            hi = mid
        else:
            lo = mid + 1
    return lo


def tokens(i: int) -> list[int]:
    return [i] * ENTRY_TOKENS  # no two entries share a prefix: none absorbs another


def filled_store(tmp_path) -> PromptCacheStore:
    """A store of ENTRIES conversations of 16 MiB of KV arrays each (8 KV heads
    x 128 dims x fp16, 2 layers), far above the few KB mlx's use drifts by,
    with a disk tier. The test keeps no reference to the arrays, so what the
    store lets go mlx frees."""
    store = PromptCacheStore(
        max_entries=8, max_bytes=1 << 40, disk=DiskTier(tmp_path / "disk", COMPAT, 1 << 34)
    )
    for i in range(ENTRIES):
        cache = [KVCache() for _ in range(2)]
        for c in cache:
            x = mx.zeros((1, 8, ENTRY_TOKENS, 128), dtype=mx.float16)
            c.update_and_fetch(x, x)
        store.insert_cache(MODEL, tokens(i), cache)
    mx.synchronize()
    return store


def limit(plan: mp.Plan, n: int) -> mp.Plan:
    return dataclasses.replace(plan, limit=n)


def test_a_request_that_fits_spills_nothing(plan, tmp_path):
    store = filled_store(tmp_path)
    before = store.nbytes
    roomy = mx.get_active_memory() + request_bytes(plan, PROMPT, MOST) + before
    assert fit_or_spill(limit(plan, roomy), store, PROMPT, MOST) == 0
    assert store.nbytes == before and len(store) == ENTRIES
    assert store.disk.stats()["entries"] == 0


def test_a_request_just_over_the_limit_spills_the_least_recent_entries_to_disk(
    plan, tmp_path, caplog
):
    store = filled_store(tmp_path)
    before = store.nbytes
    # A quarter of the cache short: spilling half of it (two entries) makes room.
    tight = mx.get_active_memory() + request_bytes(plan, PROMPT, MOST) - before // 4
    with caplog.at_level(logging.INFO, logger="mlx_native_server.engine.engine"):
        spilled = fit_or_spill(limit(plan, tight), store, PROMPT, MOST)
    assert spilled == before // 2 and store.nbytes == before - spilled
    assert len(store) == ENTRIES - 2
    assert mp.request_fits(limit(plan, tight), mx.get_active_memory(), PROMPT, MOST)
    assert store.disk.has(tokens(0)) and store.disk.has(tokens(1))  # least recently used
    assert not store.disk.has(tokens(2)) and not store.disk.has(tokens(3))
    assert f"memory: spilled {spilled} bytes of prompt cache to fit a request" in caplog.text
    # Spilled is not lost: the next prompt of that conversation loads it from disk.
    cache, rest = store.fetch_nearest_cache(MODEL, tokens(0) + [7])
    assert cache is not None and rest == [7] and store.counters["disk_hits"] == 1


def test_a_request_that_cannot_fit_even_with_an_empty_cache_is_refused(plan, tmp_path):
    store = filled_store(tmp_path)
    without_cache = mx.get_active_memory() - store.nbytes
    # Half of what the request needs beside what is left once the cache is gone.
    short = without_cache + request_bytes(plan, PROMPT, MOST) // 2
    with pytest.raises(MemoryExhausted) as e:
        fit_or_spill(limit(plan, short), store, PROMPT, MOST)
    assert re.fullmatch(
        rf"{PROMPT} prompt tokens plus up to {MOST} more need more memory than the plan's "
        rf"limit leaves \(\d+\.\d\d GB in use of {short / 1e9:.2f} GB\)",
        str(e.value),
    ), str(e.value)
    assert len(store) == 0  # everything was spilled before giving up...
    assert all(store.disk.has(tokens(i)) for i in range(ENTRIES))  # ...to disk


# -- through the engine's generation thread ---------------------------------------------


# Both KV settings go through the scheduler (adapter/scheduler.py); the guard
# runs where each request is tokenized, at either.
@pytest.mark.parametrize("kv_bits", [4, 0], ids=["kv4", "kv0"])
def test_the_engine_refuses_before_the_prefill_and_serves_once_it_fits(
    demo_model, tmp_path, kv_bits
):
    """Engine.guard_memory (what serve.run installs) checks every request on
    the generation thread, at both KV settings; MemoryExhausted comes
    back to the caller, which app_state.App.start turns into 503 or 529."""
    paths = Paths(home=tmp_path, config_file=tmp_path / "server.toml", log_dir=tmp_path / "logs")
    settings = config.load(
        {
            "model": str(demo_model),
            "max_tokens": 4096,
            "kv_bits": kv_bits,
            "prompt_cache_disk": False,
        },
        {},
        paths,
    )
    fitting = plan_cmd.plan_for(settings, mp.Device("linux-cpu", 64 * 2**30, 32 * 2**30, "of RAM"))
    engine = Engine(plan_cmd.resolve(settings, fitting))
    try:
        engine.guard_memory(limit(fitting, fitting.weights))  # the weights alone fill it
        with pytest.raises(
            MemoryExhausted,
            match=r"prompt tokens plus up to 8 more need more "
            r"memory than the plan's limit leaves",
        ):
            engine.generate(ChatRequest(messages=HELLO, max_tokens=8))
        assert engine.alive and engine.healthy  # a refusal is no failure
        engine.guard_memory(fitting)
        run = engine.generate(ChatRequest(messages=HELLO, max_tokens=8, temperature=0))
        assert [step for step in run if step.finish_reason is not None]
    finally:
        engine.stop()


# -- a real server ---------------------------------------------------------------------------

SERVER_ARGS = ["--max-tokens", "4096", "--prompt-cache-size", "4"]


def done_line(srv) -> str:
    """The first 'done:' line of app.log; it is written just after the reply."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [ln for ln in srv.app_log().splitlines() if "done: " in ln]
        if lines:
            return lines[0]
        time.sleep(0.1)
    return ""


def test_a_server_under_a_memory_limit_that_fits_answers_and_logs_memory_per_request(
    script, start_server, demo_model, tmp_path
):
    r = script(
        "start-server.sh",
        "--model",
        str(demo_model),
        "--plan",
        "--json",
        *SERVER_ARGS,
        home=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    exact = json.loads(r.stdout)["total"]  # the least limit the plan fits
    with start_server(args=[*SERVER_ARGS, "--memory-limit", str(exact)]) as srv:
        reply = requests.post(
            srv.base_url + "/chat/completions",
            timeout=120,
            json={"messages": HELLO, "max_tokens": 8},
        )
        assert reply.status_code == 200, reply.text
        line = done_line(srv)
        used = re.search(r" memory=(\d+)MB$", line)
        assert used and 0 < int(used.group(1)) * 1e6 <= exact, line
        log = srv.app_log()
        assert "memory plan: fits: " in log
        assert f"of memory_limit = {config.human_size(exact)} (set by --memory-limit)" in log
        assert "memory: spilled" not in log  # it fitted without touching the prompt cache
        metrics = requests.get(srv.root_url + "/metrics", timeout=10).text
        assert (
            float(
                re.search(r"^mlx_native_server_memory_limit_bytes (\S+)$", metrics, re.M).group(1)
            )
            == exact
        )
