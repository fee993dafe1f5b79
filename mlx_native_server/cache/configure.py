"""The prompt cache a configuration asks for: store.py's PromptCacheStore
within the settings' limits, and the disk tier where it lives.

The disk tier reuses an entry only where what makes a KV state reusable
matches (`compat`): the model's fingerprint (fingerprint.py), the KV cache's
settings and mlx-lm's version, which the engine passes in. A disk tier that
cannot be opened is left out with a warning: the server caches in memory only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .disk import DiskTier
from .fingerprint import model_fingerprint
from .store import PromptCacheStore

log = logging.getLogger("mlx_native_server.cache.configure")


def make_prompt_cache_store(
    settings, *, kv_bits: int | None = None, mlx_lm_version: str = "", distributed: bool = False
) -> PromptCacheStore:
    """The prompt cache for this configuration: memory limits, and the disk
    tier unless it is off or the model runs on several ranks (each rank
    holds a shard of the KV state)."""
    disk = None
    if settings.prompt_cache_disk and not distributed:
        disk = _disk_tier(
            settings,
            {
                "kv_bits": kv_bits or 0,
                "kv_group_size": settings.kv_group_size,
                "quantized_kv_start": settings.quantized_kv_start,
                "mlx_lm_version": mlx_lm_version,
            },
        )
    return PromptCacheStore(
        settings.prompt_cache_size, settings.prompt_cache_bytes or (1 << 62), disk
    )


def cache_dir(settings) -> Path:
    """Where the disk tier lives: prompt_cache_dir, or local-models/.prompt-cache."""
    if settings.prompt_cache_dir:
        return settings.paths.resolve(settings.prompt_cache_dir)
    return settings.paths.cache_dir


def _disk_tier(settings, kv: dict) -> DiskTier | None:
    root = cache_dir(settings)
    try:
        compat = {"fingerprint": model_fingerprint(settings.model_path), **kv}
        return DiskTier(root, compat, settings.prompt_cache_disk_bytes)
    except OSError as e:
        log.warning(
            "prompt cache: no disk tier (%s); set prompt_cache_dir to a "
            "writable directory or prompt_cache_disk = false",
            e,
        )
        return None
