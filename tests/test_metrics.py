"""`GET /metrics`' body: feed a ServerMetrics, render it, and read it back the
way Prometheus would, with prometheus_client's own parser."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlx_native_server.http.metrics import ServerMetrics

GiB = 1 << 30


def scrape(metrics: ServerMetrics) -> tuple[dict[str, str], dict[tuple, float]]:
    """(family name -> type, (sample name, labels) -> value) of one scrape."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    types, samples = {}, {}
    for family in text_string_to_metric_families(body.decode()):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def full_metrics(**overrides) -> ServerMetrics:
    sources = dict(
        memory=lambda: {"active": 40 * GiB, "peak": 50 * GiB, "cache": 2 * GiB, "limit": 60 * GiB},
        prompt_cache=lambda: {
            "entries": 3,
            "bytes": 5 * GiB,
            "max_entries": 8,
            "max_bytes": 16 * GiB,
            "tokens": 90_000,
            "memory_hits": 2,
            "disk_hits": 1,
            "misses": 1,
            "reused_tokens": 80_000,
            "evicted": 4,
            "spilled": 4,
            "disk": {
                "dir": "cache",
                "entries": 7,
                "bytes": 12 * GiB,
                "max_bytes": 64 * GiB,
                "foreign_entries": 0,
            },
        },
        queue_depth=lambda: 2,
        in_flight=lambda: 3,
        engine_state=lambda: "ok",
        batching=lambda: {
            "decoding": 3,
            "prefilling": 1,
            "queued": 0,
            "steps": 900,
            "batched_steps": 700,
            "widest_batch": 4,
            "decoded_tokens": 2500,
            "decode_seconds": 31.25,
        },
    )
    sources.update(overrides)
    return ServerMetrics(version="0.1.0", mlx_lm_version="0.32.2", model="mlx-local", **sources)


def test_requests_count_by_endpoint_and_status():
    m = full_metrics()
    for _ in range(3):
        m.request_finished("/v1/chat/completions", 200)
    m.request_finished("/v1/messages", 400)
    m.request_finished("/chat/completions", 200)  # the alias counts as the route
    m.request_finished("/v1/models/mlx-local", 200)
    m.request_finished("/metrics", 401)
    types, samples = scrape(m)
    assert types["mlx_native_server_requests"] == "counter"
    total = "mlx_native_server_requests_total"
    assert value(samples, total, endpoint="/v1/chat/completions", status="200") == 4
    assert value(samples, total, endpoint="/v1/messages", status="400") == 1
    assert value(samples, total, endpoint="/v1/models", status="200") == 1
    assert value(samples, total, endpoint="/metrics", status="401") == 1


def test_unknown_paths_collapse_to_other():
    m = full_metrics()
    for path in ("/wp-admin", "/.env", "/v1/chat/completions/../../etc", "/v2/x?y=1"):
        m.request_finished(path, 404)
    _, samples = scrape(m)
    endpoints = {
        dict(labels)["endpoint"]
        for name, labels in samples
        if name == "mlx_native_server_requests_total"
    }
    assert endpoints == {"other"}
    assert value(samples, "mlx_native_server_requests_total", endpoint="other", status="404") == 4


def test_generations_feed_token_counters_cache_hits_and_histograms():
    m = full_metrics()
    m.generation_finished(
        prompt_tokens=1000,
        cached_tokens=900,
        completion_tokens=50,
        ttft_seconds=0.2,
        decode_tokens_per_second=45.0,
        cache_source="memory",
    )
    m.generation_finished(30_000, 29_000, 10, 4.0, 38.0, "disk")
    m.generation_finished(500, 0, 20, 90.0, 52.0, "none")
    types, samples = scrape(m)
    assert value(samples, "mlx_native_server_prompt_tokens_total") == 31_500
    assert value(samples, "mlx_native_server_generated_tokens_total") == 80
    cached = "mlx_native_server_cached_prompt_tokens_total"
    assert value(samples, cached, source="memory") == 900
    assert value(samples, cached, source="disk") == 29_000
    lookups = "mlx_native_server_prompt_cache_lookups_total"
    assert [value(samples, lookups, source=s) for s in ("memory", "disk", "none")] == [1, 1, 1]

    ttft = "mlx_native_server_time_to_first_token_seconds"
    assert types[ttft] == "histogram"
    assert value(samples, f"{ttft}_count") == 3
    assert value(samples, f"{ttft}_sum") == pytest.approx(94.2)
    assert value(samples, f"{ttft}_bucket", le="0.01") == 0
    assert value(samples, f"{ttft}_bucket", le="0.25") == 1
    assert value(samples, f"{ttft}_bucket", le="5.0") == 2
    assert value(samples, f"{ttft}_bucket", le="600.0") == 3
    decode = "mlx_native_server_decode_tokens_per_second"
    assert types[decode] == "histogram"
    assert value(samples, f"{decode}_bucket", le="1.0") == 0
    assert value(samples, f"{decode}_bucket", le="40.0") == 1
    assert value(samples, f"{decode}_bucket", le="2000.0") == 3


def test_a_generation_without_tokens_leaves_the_histograms_alone():
    m = full_metrics()
    # cancelled before its first token: no TTFT, no decode phase
    m.generation_finished(2000, 0, 0, 12.0, 0.0, "none")
    _, samples = scrape(m)
    assert value(samples, "mlx_native_server_prompt_tokens_total") == 2000
    assert value(samples, "mlx_native_server_time_to_first_token_seconds_count") == 0
    assert value(samples, "mlx_native_server_decode_tokens_per_second_count") == 0


def test_cache_counters_start_at_zero():
    _, samples = scrape(full_metrics())
    for source in ("memory", "disk", "none"):
        assert value(samples, "mlx_native_server_prompt_cache_lookups_total", source=source) == 0


def test_gauges_read_at_scrape_time():
    state = {"value": "loading"}
    m = full_metrics(engine_state=lambda: state["value"])
    types, samples = scrape(m)
    engine = "mlx_native_server_engine_state"
    assert types[engine] == "gauge"
    assert {
        s: value(samples, engine, state=s) for s in ("loading", "ok", "draining", "failed")
    } == {"loading": 1, "ok": 0, "draining": 0, "failed": 0}
    state["value"] = "ok"
    _, samples = scrape(m)
    assert value(samples, engine, state="ok") == 1
    assert value(samples, engine, state="loading") == 0

    assert value(samples, "mlx_native_server_memory_active_bytes") == 40 * GiB
    assert value(samples, "mlx_native_server_memory_peak_bytes") == 50 * GiB
    assert value(samples, "mlx_native_server_memory_cache_bytes") == 2 * GiB
    assert value(samples, "mlx_native_server_memory_limit_bytes") == 60 * GiB
    assert value(samples, "mlx_native_server_requests_waiting") == 2
    assert value(samples, "mlx_native_server_requests_in_flight") == 3
    assert value(samples, "mlx_native_server_prompt_cache_entries", tier="memory") == 3
    assert value(samples, "mlx_native_server_prompt_cache_entries", tier="disk") == 7
    assert value(samples, "mlx_native_server_prompt_cache_bytes", tier="memory") == 5 * GiB
    assert value(samples, "mlx_native_server_prompt_cache_bytes", tier="disk") == 12 * GiB
    assert value(samples, "mlx_native_server_prompt_cache_max_bytes", tier="disk") == 64 * GiB
    assert types["mlx_native_server_prompt_cache_evictions"] == "counter"
    assert value(samples, "mlx_native_server_prompt_cache_evictions_total") == 4
    assert value(samples, "mlx_native_server_engine_sequences", state="decoding") == 3
    assert value(samples, "mlx_native_server_engine_sequences", state="prefilling") == 1
    assert value(samples, "mlx_native_server_engine_sequences", state="queued") == 0
    assert types["mlx_native_server_batched_decode_steps"] == "counter"
    assert value(samples, "mlx_native_server_decode_steps_total") == 900
    assert value(samples, "mlx_native_server_batched_decode_steps_total") == 700
    assert value(samples, "mlx_native_server_decode_tokens_total") == 2500
    assert value(samples, "mlx_native_server_decode_seconds_total") == 31.25
    assert (
        value(
            samples,
            "mlx_native_server_info",
            version="0.1.0",
            mlx_lm_version="0.32.2",
            model="mlx-local",
        )
        == 1
    )


def test_prompt_cache_stats_with_missing_keys():
    # the engine's fallback without a disk tier: entries and bytes only
    _, samples = scrape(full_metrics(prompt_cache=lambda: {"entries": 1, "bytes": 2048}))
    assert value(samples, "mlx_native_server_prompt_cache_entries", tier="memory") == 1
    assert value(samples, "mlx_native_server_prompt_cache_bytes", tier="memory") == 2048
    names = {name for name, _ in samples}
    assert not [
        labels
        for name, labels in samples
        if name == "mlx_native_server_prompt_cache_entries" and ("tier", "disk") in labels
    ]
    assert "mlx_native_server_prompt_cache_max_bytes" not in names
    assert "mlx_native_server_prompt_cache_evictions_total" not in names


def test_real_prompt_cache_store_stats(tmp_path):
    """The keys Engine.cache_stats() really returns, from a real store and disk tier."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    from mlx_native_server.cache.disk import DiskTier
    from mlx_native_server.cache.store import PromptCacheStore

    def small_kv(n):
        cache = [KVCache() for _ in range(2)]
        for c in cache:
            x = mx.ones((1, 2, n, 64), dtype=mx.float16)
            c.update_and_fetch(x, x)
        return cache

    compat = {
        "fingerprint": "f" * 64,
        "mlx_lm_version": "0.32.2",
        "kv_bits": 0,
        "kv_group_size": 64,
        "quantized_kv_start": 0,
    }
    disk = DiskTier(tmp_path, compat, GiB)
    assert disk.write(list(range(100)), small_kv(100))
    store = PromptCacheStore(max_entries=4, max_bytes=GiB, disk=disk)
    store.insert_cache(("demo", None, None), list(range(50)), small_kv(50))
    _, samples = scrape(full_metrics(prompt_cache=store.stats))
    entries = "mlx_native_server_prompt_cache_entries"
    assert value(samples, entries, tier="memory") == 1
    assert value(samples, entries, tier="disk") == 1
    assert value(samples, "mlx_native_server_prompt_cache_bytes", tier="memory") == store.nbytes
    assert value(samples, "mlx_native_server_prompt_cache_max_bytes", tier="memory") == GiB
    assert value(samples, "mlx_native_server_prompt_cache_bytes", tier="disk") > 0
    assert value(samples, "mlx_native_server_prompt_cache_evictions_total") == 0


def test_a_failing_callable_costs_only_its_own_metrics(caplog):
    def broken():
        raise RuntimeError("memory probe exploded")

    m = full_metrics(
        memory=broken,
        engine_state=lambda: "confused",
        queue_depth=lambda: None,
        prompt_cache=lambda: None,
    )
    m.request_finished("/health", 200)
    with caplog.at_level(logging.WARNING, logger="mlx_native_server.http.metrics"):
        _, samples = scrape(m)
        scrape(m)  # a second scrape still answers
    names = {name for name, _ in samples}
    assert "mlx_native_server_memory_active_bytes" not in names
    assert "mlx_native_server_engine_state" not in names
    assert "mlx_native_server_requests_waiting" not in names
    assert "mlx_native_server_prompt_cache_entries" not in names
    assert value(samples, "mlx_native_server_requests_in_flight") == 3
    assert value(samples, "mlx_native_server_requests_total", endpoint="/health", status="200") == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("reading memory failed" in t and "memory probe exploded" in t for t in messages)
    assert any("reading engine_state failed" in t and "confused" in t for t in messages)
    # the traceback once per outage, not once per scrape
    assert sum(1 for r in caplog.records if "reading memory" in r.getMessage() and r.exc_info) == 1


def test_sources_left_out_are_absent():
    m = ServerMetrics(version="0.1.0", mlx_lm_version="0.32.2", model="mlx-local")
    _, samples = scrape(m)
    names = {name for name, _ in samples}
    assert "mlx_native_server_info" in names
    assert not [
        n
        for n in names
        if n.startswith(("mlx_native_server_memory", "mlx_native_server_engine_state"))
    ]


def test_two_servers_in_one_process_keep_their_own_numbers():
    a, b = full_metrics(), full_metrics()
    a.request_finished("/health", 200)
    _, samples = scrape(b)
    assert (
        "mlx_native_server_requests_total",
        (("endpoint", "/health"), ("status", "200")),
    ) not in samples


def test_imports_without_mlx():
    code = (
        "import sys, mlx_native_server.http.metrics; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('mlx', 'mlx_lm', 'numpy', 'starlette', 'uvicorn')]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
