"""The prompt cache the engine keeps KV states in: memory, then disk.

mlx-lm's server calls `fetch_nearest_cache`, `insert_cache`, `trim_to`,
`nbytes`, `len()` and `stats_by_type()` on it from the generation thread.
This store keeps several entries within a byte budget and lets
policy.py choose what to evict (superseded turns, then short side
requests, then the least recently used conversation); what memory evicts and
what is live at a clean shutdown goes to the disk tier (disk.py), which
a later lookup, or the next server, loads from when it matches the prompt
better than memory does. The engine tells the store which request comes next
(`begin`) so entries carry the client's session hint and each request learns
what the lookup found (`Lookup`). configure.py builds it from the settings.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from ..adapter.kv import can_trim_prompt_cache, trim_prompt_cache
from . import policy
from .disk import DiskTier

log = logging.getLogger("mlx_native_server.cache.store")


@dataclass
class Lookup:
    """What the cache did for one request's prompt."""

    source: str = "none"  # "memory", "disk" or "none"
    prompt_tokens: int = 0
    reused: int = 0
    diverged_at: int | None = None  # where the prompt left the best entry
    load_seconds: float = 0.0

    def describe(self) -> str:
        text = self.source
        if self.source == "disk":
            text += f" (loaded in {self.load_seconds:.2f}s)"
        if self.diverged_at is not None:
            text += f" diverged_at={self.diverged_at}"
        return text


@dataclass
class Ticket:
    """One request's link to the cache: its session hint in, its Lookup out."""

    session: str | None = None
    lookup: Lookup | None = None


@dataclass
class _Item:
    model: Any
    tokens: np.ndarray
    cache: list
    nbytes: int
    cache_type: str
    session: str | None
    last_used: int
    superseded: bool = False
    on_disk: bool = False
    trimmable: bool = field(default=True)


def _offset(cache: list) -> int | None:
    offset = getattr(cache[0], "offset", None) if cache else None
    return offset if isinstance(offset, int) else None


class PromptCacheStore:
    """Memory entries under `max_entries` and `max_bytes`, spilling to `disk`."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        disk: DiskTier | None = None,
        short_tokens: int = policy.DEFAULT_SHORT_TOKENS,
        disk_min_gain: int = policy.DEFAULT_DISK_MIN_GAIN,
    ):
        self.limits = policy.Limits(max_entries, max_bytes, short_tokens)
        self.disk = disk
        self.disk_min_gain = disk_min_gain
        self.items: dict[int, _Item] = {}
        self.counters = {
            "memory_hits": 0,
            "disk_hits": 0,
            "misses": 0,
            "reused_tokens": 0,
            "evicted": 0,
            "spilled": 0,
        }
        self._ids = itertools.count()
        self._tick = itertools.count(1)
        self._ticket = Ticket()
        self._lock = threading.RLock()

    # ---- the engine's side ----------------------------------------------

    def begin(self, ticket: Ticket | None) -> None:
        """The request whose prompt is looked up (and then inserted) next."""
        self._ticket = ticket or Ticket()

    # ---- upstream's interface -------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self.items.values())

    def stats_by_type(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for i in list(self.items.values()):
            s = out.setdefault(i.cache_type, {"n_sequences": 0, "n_bytes": 0})
            s["n_sequences"] += 1
            s["n_bytes"] += i.nbytes
        return out

    def fetch_nearest_cache(self, model: Any, tokens: list[int]):
        """(a private copy of the best KV state or None, the tokens left to compute)."""
        prompt = np.asarray(tokens, dtype=np.int64)
        item, mem_usable, mem_common = self._best_in_memory(model, prompt)
        disk_entry, disk_usable, disk_common = (
            self.disk.best(prompt) if self.disk is not None else (None, 0, 0)
        )
        source = policy.choose_source(mem_usable, disk_usable, self.disk_min_gain)
        lookup = Lookup(prompt_tokens=len(tokens))
        cache = None
        if source == "disk":
            # choose_source picks disk only for a match of more than 0 tokens.
            assert self.disk is not None and disk_entry is not None, "disk chosen without a match"
            start = time.perf_counter()
            cache = self.disk.load(disk_entry)
            lookup.load_seconds = time.perf_counter() - start
            usable, n, common = disk_usable, disk_entry.n_tokens, disk_common
            if cache is None:
                source = "memory" if mem_usable else "none"
        if source == "memory":
            assert item is not None, "memory chosen without a match"  # mem_usable > 0
            with self._lock:
                cache = copy.deepcopy(item.cache)
                item.last_used = next(self._tick)
                item.superseded = False
            usable, n, common = mem_usable, len(item.tokens), mem_common
        if cache is None:
            self.counters["misses"] += 1
            self._ticket.lookup = lookup
            return None, tokens
        if n > usable:
            trim_prompt_cache(cache, n - usable)
        lookup.source, lookup.reused = source, usable
        lookup.diverged_at = policy.divergence(n, common, len(tokens))
        self.counters[f"{source}_hits"] += 1
        self.counters["reused_tokens"] += usable
        self._ticket.lookup = lookup
        return cache, tokens[usable:]

    def insert_cache(
        self, model: Any, tokens: list[int], prompt_cache: list, *, cache_type: str = "assistant"
    ) -> None:
        """Keep a KV state for `tokens`; evict by the policy to stay in the limits."""
        tokens = list(tokens)
        offset = _offset(prompt_cache)
        if offset is not None and offset < len(tokens):
            tokens = tokens[:offset]  # the last sampled token was never fed back
        elif offset is not None and offset > len(tokens):
            trim_prompt_cache(prompt_cache, offset - len(tokens))
        mx.eval([c.state for c in prompt_cache])
        session = self._ticket.session
        new = _Item(
            model,
            np.asarray(tokens, dtype=np.int64),
            prompt_cache,
            sum(c.nbytes for c in prompt_cache),
            cache_type,
            session,
            next(self._tick),
            trimmable=can_trim_prompt_cache(prompt_cache),
        )
        with self._lock:
            self._absorb(new)
            self.items[next(self._ids)] = new
            evicted = self._evict(self.limits)
        self._spill(evicted)

    def trim_to(self, *, n_sequences: int | None = None, n_bytes: int | None = None) -> None:
        limits = policy.Limits(
            self.limits.max_entries if n_sequences is None else max(0, n_sequences),
            self.limits.max_bytes if n_bytes is None else max(0, n_bytes),
            self.limits.short_tokens,
        )
        with self._lock:
            evicted = self._evict(limits)
        self._spill(evicted)

    # ---- ours -------------------------------------------------------------

    def spill(self, nbytes: int) -> int:
        """Free at least `nbytes` of memory, as far as the entries hold it:
        evict in the policy's order, each entry written to the disk tier (or
        dropped when the tier is off or the entry is superseded). Returns the
        bytes freed; request admission calls it when a request would not fit."""
        if nbytes <= 0:
            return 0
        with self._lock:
            target = max(0, self.nbytes - nbytes)
            evicted = self._evict(
                policy.Limits(self.limits.max_entries, target, self.limits.short_tokens)
            )
        self._spill(evicted)
        return sum(i.nbytes for i in evicted)

    def persist(self) -> int:
        """Write the live entries to disk (most recently used first); at a clean stop."""
        if self.disk is None:
            return 0
        with self._lock:
            items = sorted(self.items.values(), key=lambda i: -i.last_used)
        live = [i for i in items if not i.superseded and not i.on_disk]
        written = sum(self._write(i) for i in live)
        log.info("prompt cache: wrote %d live entries to %s", written, self.disk.root)
        return written

    def stats(self) -> dict[str, Any]:
        """Entries, bytes, hits and misses, for GET /status."""
        with self._lock:
            items = list(self.items.values())
        out: dict[str, Any] = {
            "entries": len(items),
            "bytes": sum(i.nbytes for i in items),
            "max_entries": self.limits.max_entries,
            "max_bytes": self.limits.max_bytes,
            "tokens": sum(len(i.tokens) for i in items),
            **self.counters,
        }
        out["disk"] = self.disk.stats() if self.disk is not None else None
        return out

    # ---- internals ----------------------------------------------------------

    def _best_in_memory(self, model, prompt: np.ndarray) -> tuple[_Item | None, int, int]:
        best, best_usable, best_common = None, 0, 0
        with self._lock:
            items = [i for i in self.items.values() if i.model == model]
        for i in items:
            common = policy.common_prefix(i.tokens, prompt)
            usable = policy.usable_prefix(len(i.tokens), common, len(prompt), i.trimmable)
            if usable > best_usable:
                best, best_usable, best_common = i, usable, common
        return best, best_usable, best_common

    def _absorb(self, new: _Item) -> None:
        """Drop entries the new one covers; mark the turns it supersedes."""
        for key, old in list(self.items.items()):
            if old.model != new.model:
                continue
            common = policy.common_prefix(old.tokens, new.tokens)
            if common == len(old.tokens) and new.trimmable:
                del self.items[key]  # a prefix: the new entry serves all of it
            elif policy.superseded_by(
                old.session, new.session, len(old.tokens), common, self.limits.short_tokens
            ):
                old.superseded = True

    def _evict(self, limits: policy.Limits) -> list[_Item]:
        views = [
            policy.Entry(k, len(i.tokens), i.nbytes, i.last_used, i.session, i.superseded)
            for k, i in self.items.items()
        ]
        evicted = [self.items.pop(k) for k in policy.victims(views, limits)]
        self.counters["evicted"] += len(evicted)
        return evicted

    def _spill(self, evicted: list[_Item]) -> None:
        for item in evicted:
            view = policy.Entry(
                0, len(item.tokens), item.nbytes, item.last_used, item.session, item.superseded
            )
            if policy.spill_to_disk(view) and not item.on_disk and self._write(item):
                self.counters["spilled"] += 1

    def _write(self, item: _Item) -> bool:
        if self.disk is None or len(item.tokens) == 0:
            return False
        ok = self.disk.write(item.tokens, item.cache, item.session)
        item.on_disk = item.on_disk or ok
        return ok
