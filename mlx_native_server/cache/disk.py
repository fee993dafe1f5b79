"""The disk tier of the prompt cache: KV states that outlive memory and restarts.

One safetensors file per entry (mlx-lm's save_prompt_cache format), its
header carrying what makes it safe to reuse: the model fingerprint, mlx-lm
version and KV settings (`compat`), and the tokens it covers. Entries whose
compat differs are never used; a truncated or corrupt file is skipped with a
warning and removed. Writes go to a temporary file that is renamed into
place, so a reader never sees half an entry. The directory is kept under
`max_bytes` by the same policy as memory (policy.victims), files of
other models or versions going first. The entries decode back to the user's
prompts, so the directory is 0700 and every file in it 0600 (filemodes).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_map, tree_unflatten

from ..adapter.kv import (
    KVCache,
    QuantizedKVCache,
    can_trim_prompt_cache,
    load_prompt_cache,
    save_prompt_cache,
)
from ..core import filemodes
from . import policy

log = logging.getLogger("mlx_native_server.cache.disk")

FORMAT = "1"  # bump when the file layout changes: older files are then foreign
SUFFIX = ".safetensors"
STALE_TMP_SECONDS = 3600  # a temp file this old is a crashed writer's leftover


class CorruptEntry(Exception):
    """A cache file that cannot be read back."""


@dataclass
class DiskEntry:
    path: Path
    tokens: np.ndarray
    nbytes: int
    last_used: float
    session: str | None
    trimmable: bool
    compatible: bool

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def read_metadata(path: Path) -> dict[str, str]:
    """Our metadata from a safetensors header, checking the file is whole."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8 or n > 100 << 20:
                raise CorruptEntry("header length beyond the end of the file")
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as e:
        raise CorruptEntry(str(e)) from None
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    if 8 + n + max(ends, default=0) != size:
        raise CorruptEntry(f"{size} bytes, the header describes {8 + n + max(ends, default=0)}")
    flat = header.get("__metadata__") or {}
    meta = tree_unflatten(list(flat.items()))
    if not isinstance(meta, list) or not meta or not isinstance(meta[0], dict):
        raise CorruptEntry("no prompt-cache metadata")
    return meta[0]


def encode_tokens(tokens) -> str:
    return base64.b64encode(np.asarray(tokens, dtype="<u4").tobytes()).decode("ascii")


def decode_tokens(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u4").astype(np.int64)


def _compact(layer):
    """A copy of a KV layer without the unused capacity past its offset."""
    if not isinstance(layer, (KVCache, QuantizedKVCache)) or layer.keys is None:
        return layer
    n = layer.offset
    out = copy.copy(layer)
    out.keys, out.values = tree_map(lambda x: x[..., :n, :], (layer.keys, layer.values))
    return out


class DiskTier:
    """Entries of one model under `root`; thread-safe."""

    def __init__(
        self,
        root: Path,
        compat: Mapping[str, str],
        max_bytes: int,
        short_tokens: int = policy.DEFAULT_SHORT_TOKENS,
    ):
        self.root = Path(root)
        self.compat = {"mns_format": FORMAT, **{k: str(v) for k, v in compat.items()}}
        self.max_bytes = max_bytes
        self.short_tokens = short_tokens
        self.entries: dict[Path, DiskEntry] = {}
        self.counters = {"writes": 0, "loads": 0, "load_seconds": 0.0, "removed_corrupt": 0}
        self._lock = threading.Lock()
        if not filemodes.private_dir(self.root, tighten_existing=True):
            log.warning(
                "prompt cache directory %s cannot be made 0700 (not yours?); other "
                "users can list it, though its files stay 0600",
                self.root,
            )
        self.scan()

    # ---- index ---------------------------------------------------------

    def scan(self) -> None:
        """Index the directory: drop corrupt files and stale temp files."""
        entries = {}
        for path in self.root.iterdir():
            if ".tmp-" in path.name:
                self._remove_stale_tmp(path)
            elif path.name.endswith(SUFFIX):
                entry = self._read_entry(path)
                if entry is not None:
                    entries[path] = entry
        with self._lock:
            self.entries = entries
        usable = sum(e.compatible for e in entries.values())
        log.info(
            "prompt cache on disk: %d usable entries of %d in %s", usable, len(entries), self.root
        )

    def _read_entry(self, path: Path) -> DiskEntry | None:
        try:
            meta = read_metadata(path)
            st = path.stat()
            if st.st_mode & filemodes.OTHERS:  # written before entries were private
                filemodes.tighten(path)
            compatible = all(meta.get(k) == v for k, v in self.compat.items())
            tokens = decode_tokens(meta["tokens"]) if compatible else np.zeros(0, np.int64)
        except (CorruptEntry, KeyError, ValueError, OSError) as e:
            self._discard(path, e)
            return None
        return DiskEntry(
            path,
            tokens,
            st.st_size,
            st.st_mtime,
            meta.get("session") or None,
            meta.get("trimmable") == "1",
            compatible,
        )

    def _discard(self, path: Path, why: Any) -> None:
        log.warning("prompt cache file %s is unreadable (%s); removing it", path, why)
        self.counters["removed_corrupt"] += 1
        with self._lock:
            self.entries.pop(path, None)
        try:
            path.unlink()
        except OSError:
            pass

    @staticmethod
    def _remove_stale_tmp(path: Path) -> None:
        try:
            if time.time() - path.stat().st_mtime > STALE_TMP_SECONDS:
                path.unlink()
        except OSError:
            pass

    # ---- lookups -------------------------------------------------------

    def best(self, tokens) -> tuple[DiskEntry | None, int, int]:
        """(entry, usable tokens, common prefix) of the best compatible match."""
        with self._lock:
            candidates = [e for e in self.entries.values() if e.compatible]
        best, best_usable, best_common = None, 0, 0
        for e in candidates:
            common = policy.common_prefix(e.tokens, tokens)
            usable = policy.usable_prefix(e.n_tokens, common, len(tokens), e.trimmable)
            if usable > best_usable:
                best, best_usable, best_common = e, usable, common
        return best, best_usable, best_common

    def load(self, entry: DiskEntry) -> list | None:
        """The entry's KV state, evaluated; None (and the file removed) if unreadable."""
        start = time.perf_counter()
        try:
            cache, meta = load_prompt_cache(str(entry.path), return_metadata=True)
            if any(meta.get(k) != v for k, v in self.compat.items()):
                raise CorruptEntry("its header changed since it was indexed")
            mx.eval([c.state for c in cache])
        except Exception as e:  # mlx raises plain RuntimeError/ValueError on bad files
            self._discard(entry.path, e)
            return None
        try:
            os.utime(entry.path)
            entry.last_used = time.time()
        except OSError:
            pass
        self.counters["loads"] += 1
        self.counters["load_seconds"] += time.perf_counter() - start
        return cache

    # ---- writes --------------------------------------------------------

    def path_for(self, tokens) -> Path:
        h = hashlib.sha256(json.dumps(self.compat, sort_keys=True).encode())
        h.update(np.asarray(tokens, dtype="<u4").tobytes())
        return self.root / (h.hexdigest()[:32] + SUFFIX)

    def has(self, tokens) -> bool:
        with self._lock:
            return self.path_for(tokens) in self.entries

    def write(self, tokens, cache: list, session: str | None = None) -> bool:
        """Write an entry atomically, then drop what it covers and keep the cap."""
        path = self.path_for(tokens)
        tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}-{threading.get_ident()}{SUFFIX}")
        trimmable = can_trim_prompt_cache(cache)
        meta = {
            **self.compat,
            "tokens": encode_tokens(tokens),
            "n_tokens": str(len(tokens)),
            "session": session or "",
            "trimmable": "1" if trimmable else "0",
            "created": str(time.time()),
        }
        try:
            # Created 0600 before mlx writes into it: mlx truncates the file in
            # place, which keeps the mode; the chmod guards a writer that replaces it.
            tmp.unlink(missing_ok=True)
            os.close(filemodes.open_private(tmp))
            save_prompt_cache(str(tmp), [_compact(c) for c in cache], meta)
            os.chmod(tmp, filemodes.PRIVATE_FILE)
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except Exception as e:  # a full disk must not take the engine down
            log.warning("cannot write prompt cache entry %s: %s", path, e)
            tmp.unlink(missing_ok=True)
            return False
        entry = DiskEntry(
            path,
            np.asarray(tokens, np.int64),
            path.stat().st_size,
            time.time(),
            session,
            trimmable,
            True,
        )
        with self._lock:
            self.entries[path] = entry
        self.counters["writes"] += 1
        self._drop_covered(entry)
        self.enforce_cap()
        return True

    def _drop_covered(self, new: DiskEntry) -> None:
        """Remove entries the new one serves entirely (prefixes, superseded turns)."""
        with self._lock:
            others = [e for e in self.entries.values() if e.compatible and e is not new]
        for e in others:
            common = policy.common_prefix(e.tokens, new.tokens)
            if common == e.n_tokens or policy.superseded_by(
                e.session, new.session, e.n_tokens, common, self.short_tokens
            ):
                self._remove(e)

    def enforce_cap(self) -> None:
        """Evict until the directory fits max_bytes: other models' files first."""
        with self._lock:
            entries = list(self.entries.values())
        views = [
            policy.Entry(
                e.path, e.n_tokens, e.nbytes, e.last_used, e.session, superseded=not e.compatible
            )
            for e in entries
        ]
        limits = policy.Limits(1 << 62, self.max_bytes, self.short_tokens)
        by_path = {e.path: e for e in entries}
        for key in policy.victims(views, limits):
            self._remove(by_path[key])

    def _remove(self, entry: DiskEntry) -> None:
        with self._lock:
            self.entries.pop(entry.path, None)
        try:
            entry.path.unlink()
        except OSError:
            pass

    def stats(self) -> dict[str, Any]:
        with self._lock:
            entries = list(self.entries.values())
        ours = [e for e in entries if e.compatible]
        return {
            "dir": str(self.root),
            "entries": len(ours),
            "bytes": sum(e.nbytes for e in entries),
            "max_bytes": self.max_bytes,
            "foreign_entries": len(entries) - len(ours),
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in self.counters.items()},
        }
