"""Which cached prompts to keep, which to reuse: pure functions over plain data.

The prompt cache (store.py) holds several KV states, each keyed by
the tokens it covers. Coding agents send one long, growing conversation
(8-12K tokens of system prompt and tools, then the turns) and, now and then,
short side requests (OpenCode's title request, Claude Code's topic checks).
The rules, in the order they pick what to evict first:

1. *Superseded*: an older entry that a newer one forked from near its end
   (the previous turn of the same conversation; with a client session hint,
   any fork within one session). It is dropped, not written to disk.
2. *Short*: fewer than `short_tokens` tokens, cheap to recompute (side
   requests).
3. Everything else: long conversations and their shared system+tools prefix.

Within a class the least recently used goes first. Lookups always take the
longest usable prefix, whatever the hint says.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)  # what names an entry: a store id, a file path

# A prompt shorter than this prefills in well under a second even on the
# 61 GB model (~400 tok/s), so keeping it is worth less than any session.
DEFAULT_SHORT_TOKENS = 2048
# Loading from disk costs a read of the whole entry; below this gain over the
# memory match, prefilling the difference is about as fast.
DEFAULT_DISK_MIN_GAIN = 256

SUPERSEDED, SHORT, LONG = 0, 1, 2


@dataclass(frozen=True)
class Entry(Generic[K]):
    """What the policy knows of one cached prompt."""

    key: K
    n_tokens: int
    nbytes: int
    last_used: float  # a monotonic tick or a file's mtime: larger is more recent
    session: str | None = None
    superseded: bool = False


@dataclass(frozen=True)
class Limits:
    max_entries: int
    max_bytes: int
    short_tokens: int = DEFAULT_SHORT_TOKENS


def common_prefix(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n], dtype=np.int64)
    y = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


def usable_prefix(entry_tokens: int, common: int, prompt_tokens: int, trimmable: bool) -> int:
    """Tokens of a prompt an entry can serve.

    At least one prompt token is always left to compute (the model needs an
    input to produce the next logits). A trimmable entry serves its common
    prefix with the prompt; one that cannot be trimmed only serves when it is
    a prefix of the prompt.
    """
    limit = max(prompt_tokens - 1, 0)
    if trimmable:
        return min(common, limit)
    if common == entry_tokens and entry_tokens <= limit:
        return entry_tokens
    return 0


def divergence(entry_tokens: int, common: int, prompt_tokens: int) -> int | None:
    """Index where the prompt left the entry, or None if the entry is a prefix of it."""
    if common >= entry_tokens or common >= prompt_tokens:
        return None
    return common


def rank(entry: Entry[K], short_tokens: int) -> int:
    """The retention class of an entry: SUPERSEDED < SHORT < LONG."""
    if entry.superseded:
        return SUPERSEDED
    if entry.n_tokens < short_tokens:
        return SHORT
    return LONG


def eviction_order(
    entries: Iterable[Entry[K]], short_tokens: int = DEFAULT_SHORT_TOKENS
) -> list[Entry[K]]:
    """Entries, the first to evict first: by class, then least recently used."""
    return sorted(entries, key=lambda e: (rank(e, short_tokens), e.last_used))


def victims(entries: Iterable[Entry[K]], limits: Limits) -> list[K]:
    """Keys to evict, in order, so that what stays fits both limits."""
    entries = list(entries)
    count = len(entries)
    total = sum(e.nbytes for e in entries)
    out = []
    for e in eviction_order(entries, limits.short_tokens):
        if count <= limits.max_entries and total <= limits.max_bytes:
            break
        out.append(e.key)
        count -= 1
        total -= e.nbytes
    return out


def superseded_by(
    old_session: str | None,
    new_session: str | None,
    old_tokens: int,
    common: int,
    short_tokens: int = DEFAULT_SHORT_TOKENS,
) -> bool:
    """Whether a newer entry replaces an older one that shares `common` tokens.

    Each agent turn re-renders the previous reply (MiniMax's template drops old
    reasoning), so the previous turn's entry forks from the new one just
    before its own generated tokens: the new entry serves all it could. With
    session hints, a fork within one session supersedes (the agent compacted
    or rewound its history) and two sessions never do; without hints, a fork
    that leaves the old entry less than a quarter of its own tokens does.
    """
    if common < short_tokens:
        return False  # a side request, or another conversation
    if old_session is not None and new_session is not None:
        return old_session == new_session
    return old_tokens - common <= old_tokens // 4


def spill_to_disk(entry: Entry[K]) -> bool:
    """Whether an entry evicted from memory is worth writing to disk: a
    superseded one is not, the entry that replaced it covers it."""
    return not entry.superseded


def choose_source(
    memory_tokens: int, disk_tokens: int, min_gain: int = DEFAULT_DISK_MIN_GAIN
) -> str:
    """'memory', 'disk' or 'none': where the prompt's KV state comes from."""
    if disk_tokens > 0 and disk_tokens >= memory_tokens + min_gain:
        return "disk"
    if memory_tokens > 0:
        return "memory"
    return "none"
