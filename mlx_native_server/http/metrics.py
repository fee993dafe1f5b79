"""Prometheus metrics for `GET /metrics`.

Two kinds of numbers: counters and histograms the server feeds as requests
and generations finish (`request_finished`, `generation_finished`), and
gauges read at scrape time from callables the server passes in (memory,
prompt cache, queue, engine state). Each `ServerMetrics` has its own
registry, so several servers or tests in one process never collide.

This module imports neither mlx nor the HTTP layer: it loads in milliseconds
and its tests need no model; the callables bring the data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

log = logging.getLogger("mlx_native_server.http.metrics")

PREFIX = "mlx_native_server"

# Every value the `endpoint` label can take: a fixed set, so a scanner
# probing random paths adds one `other` series, not one per path.
ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/v1/models",
    "/health",
    "/status",
    "/metrics",
)
# The routes' other spellings, counted under the canonical path.
_ALIASES = {
    "/chat/completions": "/v1/chat/completions",
    "/responses": "/v1/responses",
    "/models": "/v1/models",
    "/v1/status": "/status",
    "/v1/health": "/health",
    "/v1/metrics": "/metrics",
}
CACHE_SOURCES = ("memory", "disk", "none")
ENGINE_STATES = ("loading", "ok", "draining", "failed")

# 10 ms (a cached short prompt) .. 10 min (a 100k-token prefill on a big model).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
# 1 .. 2000 tok/s, finest where a 60 GB model decodes (10-100 tok/s).
DECODE_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000, 2000)


def endpoint_label(path: str) -> str:
    """The `endpoint` label for a request path: one of ENDPOINTS or "other"."""
    path = path.split("?", 1)[0]
    if len(path) > 1:
        path = path.rstrip("/")
    if path.startswith("/v1/models/"):  # GET /v1/models/<id>
        return "/v1/models"
    path = _ALIASES.get(path, path)
    return path if path in ENDPOINTS else "other"


class ServerMetrics:
    """The server's metrics registry: feed it, then `render()` it per scrape.

    The callables are called on every scrape, from the thread serving
    `/metrics`; they must be cheap and thread-safe. Any of them may be None
    (its metrics are then left out), and one that raises or returns junk
    costs only its own metrics: the rest of the scrape still answers.

    - `memory()` -> {"active", "peak", "cache", "limit"}: bytes.
    - `prompt_cache()` -> what `Engine.cache_stats()` returns: "entries",
      "bytes", "max_bytes", "evicted" and "disk" (None or a dict with
      "entries", "bytes", "max_bytes"); missing keys are skipped.
    - `queue_depth()` -> requests waiting for the engine.
    - `in_flight()` -> requests being served.
    - `engine_state()` -> one of ENGINE_STATES.
    - `batching()` -> what `Engine.batch_stats()` returns: "decoding",
      "prefilling", "queued", "steps", "batched_steps"; None leaves them out.
    """

    def __init__(
        self,
        *,
        version: str,
        mlx_lm_version: str,
        model: str,
        memory: Callable[[], Mapping[str, Any]] | None = None,
        prompt_cache: Callable[[], Mapping[str, Any]] | None = None,
        queue_depth: Callable[[], int] | None = None,
        in_flight: Callable[[], int] | None = None,
        engine_state: Callable[[], str] | None = None,
        batching: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests answered, by endpoint and status code "
            '(unknown paths count as endpoint="other").',
            ["endpoint", "status"],
            registry=r,
        )
        self._prompt = Counter(
            f"{PREFIX}_prompt_tokens",
            "Prompt tokens of finished generations, cached or not.",
            registry=r,
        )
        self._cached = Counter(
            f"{PREFIX}_cached_prompt_tokens",
            "Prompt tokens reused from the prompt cache "
            "instead of computed, by the tier they came from.",
            ["source"],
            registry=r,
        )
        self._generated = Counter(
            f"{PREFIX}_generated_tokens",
            "Tokens generated (completion tokens, reasoning included).",
            registry=r,
        )
        self._lookups = Counter(
            f"{PREFIX}_prompt_cache_lookups",
            "Prompt-cache lookups by where the reused state "
            "came from: memory, disk, or none (a miss).",
            ["source"],
            registry=r,
        )
        self._ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Seconds from a request reaching the engine "
            "to its first generated token (queueing and prefill).",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self._decode = Histogram(
            f"{PREFIX}_decode_tokens_per_second",
            "Decode speed of a generation after its first token, in tokens per second.",
            buckets=DECODE_BUCKETS,
            registry=r,
        )
        for source in CACHE_SOURCES:  # zeros from the start, so rate() sees the first hit
            self._cached.labels(source)
            self._lookups.labels(source)
        r.register(
            _ScrapeCollector(
                info={"version": version, "mlx_lm_version": mlx_lm_version, "model": model},
                memory=memory,
                prompt_cache=prompt_cache,
                queue_depth=queue_depth,
                in_flight=in_flight,
                engine_state=engine_state,
                batching=batching,
            )
        )

    def request_finished(self, endpoint: str, status: int) -> None:
        """Count one answered request; `endpoint` is the request path."""
        self._requests.labels(endpoint_label(endpoint), str(int(status))).inc()

    def generation_finished(
        self,
        prompt_tokens: int,
        cached_tokens: int,
        completion_tokens: int,
        ttft_seconds: float | None,
        decode_tokens_per_second: float | None,
        cache_source: str,
    ) -> None:
        """Count one finished (or cancelled) generation.

        TTFT is observed only when a token came out, and decode speed only
        when it is positive (one token has no decode phase), so cancelled
        requests do not drag the histograms to zero. An unknown
        `cache_source` counts as "none".
        """
        source = cache_source if cache_source in CACHE_SOURCES else "none"
        self._prompt.inc(max(prompt_tokens, 0))
        self._cached.labels(source).inc(max(cached_tokens, 0))
        self._generated.inc(max(completion_tokens, 0))
        self._lookups.labels(source).inc()
        if completion_tokens > 0 and ttft_seconds is not None and ttft_seconds >= 0:
            self._ttft.observe(ttft_seconds)
        if decode_tokens_per_second is not None and decode_tokens_per_second > 0:
            self._decode.observe(decode_tokens_per_second)

    def render(self) -> tuple[bytes, str]:
        """(the exposition body, its Content-Type) for one scrape."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _ScrapeCollector(Collector):
    """The gauges read at scrape time, one callable per group."""

    def __init__(self, *, info: dict[str, str], **sources: Callable[[], Any] | None):
        self.info = {k: str(v) for k, v in info.items()}
        self.sources = {name: fn for name, fn in sources.items() if fn is not None}
        self._failing: set[str] = set()  # log a traceback once per outage, not per scrape

    def describe(self) -> list[Metric]:
        # Not probed at register time: that would call the callables before
        # the engine behind them exists.
        return []

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily(
            PREFIX, "The server's version, mlx-lm's version and the served model (value always 1)."
        )
        info.add_metric([], self.info)
        yield info
        for name, render in _FAMILIES.items():
            fn = self.sources.get(name)
            if fn is None:
                continue
            try:
                families = list(render(fn()))
            except Exception as e:
                log.warning(
                    "metrics: reading %s failed, left out of this scrape: %s",
                    name,
                    e,
                    exc_info=name not in self._failing,
                )
                self._failing.add(name)
                continue
            self._failing.discard(name)
            yield from families


def _number(value: Any) -> float | None:
    """A reading as a float, or None for a missing or non-numeric one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _gauge(name: str, doc: str, value: Any) -> Iterator[Metric]:
    number = _number(value)
    if number is not None:
        yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=number)


def _memory(reading: Mapping[str, Any]) -> Iterator[Metric]:
    yield from _gauge(
        "memory_active_bytes",
        "Bytes of accelerator memory held by live arrays (mx.get_active_memory).",
        reading.get("active"),
    )
    yield from _gauge(
        "memory_peak_bytes",
        "Most active memory since the server started (mx.get_peak_memory).",
        reading.get("peak"),
    )
    yield from _gauge(
        "memory_cache_bytes",
        "Bytes mlx keeps cached for reuse, not held by arrays (mx.get_cache_memory).",
        reading.get("cache"),
    )
    yield from _gauge(
        "memory_limit_bytes", "The memory limit mlx works within.", reading.get("limit")
    )


def _prompt_cache(stats: Mapping[str, Any]) -> Iterator[Metric]:
    tiers = {"memory": stats, "disk": stats.get("disk") or {}}
    for key, name, doc in (
        ("entries", "prompt_cache_entries", "Entries in the prompt cache, by tier."),
        ("bytes", "prompt_cache_bytes", "Bytes the prompt cache's entries take, by tier."),
        ("max_bytes", "prompt_cache_max_bytes", "The prompt cache's byte budget, by tier."),
    ):
        family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["tier"])
        for tier, values in tiers.items():
            number = _number(values.get(key))
            if number is not None:
                family.add_metric([tier], number)
        if family.samples:
            yield family
    evicted = _number(stats.get("evicted"))
    if evicted is not None:
        yield CounterMetricFamily(
            f"{PREFIX}_prompt_cache_evictions",
            "Entries the memory tier evicted to stay within its limits.",
            value=evicted,
        )


def _queue_depth(value: Any) -> Iterator[Metric]:
    yield from _gauge("requests_waiting", "Requests waiting for the engine to start them.", value)


def _in_flight(value: Any) -> Iterator[Metric]:
    yield from _gauge("requests_in_flight", "Requests being served now.", value)


def _engine_state(state: Any) -> Iterator[Metric]:
    if state not in ENGINE_STATES:
        raise ValueError(f"unknown engine state {state!r}, expected one of {ENGINE_STATES}")
    family = GaugeMetricFamily(
        f"{PREFIX}_engine_state",
        "1 for the engine's current state (loading, ok, draining, failed), 0 for the others.",
        labels=["state"],
    )
    for s in ENGINE_STATES:
        family.add_metric([s], 1.0 if s == state else 0.0)
    yield family


def _batching(stats: Mapping[str, Any] | None) -> Iterator[Metric]:
    if not stats:  # under mlx.launch, or before the engine starts
        return
    family = GaugeMetricFamily(
        f"{PREFIX}_engine_sequences",
        "Requests the engine holds now: decoding (together, in one batch), "
        "prefilling, or queued behind the concurrency limit.",
        labels=["state"],
    )
    for state in ("decoding", "prefilling", "queued"):
        number = _number(stats.get(state))
        if number is not None:
            family.add_metric([state], number)
    yield family
    for key, name, doc in (
        ("steps", "decode_steps", "Decode steps the engine ran (one token for each sequence)."),
        (
            "batched_steps",
            "batched_decode_steps",
            "Decode steps that decoded two sequences or more.",
        ),
        ("decoded_tokens", "decode_tokens", "Tokens the decode steps handed out."),
        (
            "decode_seconds",
            "decode_seconds",
            "Seconds the generation thread spent in decode steps, hand-off to the "
            "requests included: rate(decode_tokens) / rate(decode_seconds) is the "
            "engine's own decode speed.",
        ),
    ):
        number = _number(stats.get(key))
        if number is not None:
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=number)


_FAMILIES: dict[str, Callable[[Any], Iterator[Metric]]] = {
    "memory": _memory,
    "batching": _batching,
    "prompt_cache": _prompt_cache,
    "queue_depth": _queue_depth,
    "in_flight": _in_flight,
    "engine_state": _engine_state,
}
