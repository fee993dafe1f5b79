"""The settings schema: every key, declared once as a typed field of
`Settings` with key() (its default, help text, parser and check).

KEYS, derived from it, is what the flags, environment names, TOML
validation and the docs are generated from; config.py resolves each key
through the precedence chain, and is where callers import all of these from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import blas
from .config_values import (
    NOT_A_KEY,
    Key,
    key,
    keys_of,
    non_negative,
    parse_size,
    parse_size_or_auto,
    parse_upper,
    positive,
)
from .paths import Paths

Size = int  # bytes


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The effective configuration: one typed field per key, and `origins`,
    which says where each value came from. Frozen: derive a changed copy with
    replace()."""

    model: str = key(
        "local-models/MiniMax-M2.1-REAP-50-MLX-4bit",
        "Path of the MLX model directory (relative paths are from the project "
        "directory), or 'demo' for a tiny generated model that answers random text.",
    )
    host: str = key(
        "127.0.0.1", "Address to listen on. Anything but a loopback address needs api_key."
    )
    port: int = key(
        8000,
        "TCP port to listen on.",
        check=lambda v: 0 < v < 65536,
        check_text="a port from 1 to 65535",
    )
    served_model_id: str = key(
        "mlx-local", "Model id the API reports in /v1/models and answers to."
    )
    max_tokens: int = key(
        120000,
        "Context cap in tokens: prompt plus answer. A request's max_tokens is "
        "clamped to what remains; a longer prompt is refused with "
        "context_length_exceeded.",
        check=positive,
        check_text="a number above 0",
    )
    kv_bits: int = key(
        4,
        "Bits per KV-cache value: 4 or 8 quantize the cache, 0 keeps full precision.",
        choices=(0, 2, 3, 4, 5, 6, 8),
    )
    kv_group_size: int = key(64, "Group size of KV-cache quantization.", choices=(32, 64, 128))
    quantized_kv_start: int = key(
        5000,
        "Tokens kept in full precision before the KV cache is quantized.",
        check=non_negative,
        check_text="0 or more",
    )
    prompt_cache_size: int = key(
        8,
        "Most prompt KV states kept in memory (agent sessions, their shared "
        "prefix, side requests), within prompt_cache_bytes; 0 keeps none. "
        "CACHE.md explains the policy.",
        check=non_negative,
        check_text="0 or more",
    )
    prompt_cache_bytes: Size | Literal["auto"] = key(
        "auto",
        "Memory budget of the prompt cache (e.g. 8GB, 512MiB); 0 means no byte "
        "limit; auto takes what the memory plan leaves, up to 16GiB "
        "(KV_CACHE_QUANTIZATION.md, Memory plan).",
        parse=parse_size_or_auto,
        check=lambda v: v == "auto" or v >= 0,
        check_text="auto, or 0 or more bytes",
    )
    prompt_cache_disk: bool = key(
        True,
        "Write prompt KV states evicted from memory, and the live ones at a clean "
        "stop, to prompt_cache_dir, and reuse them, also after a restart.",
    )
    prompt_cache_dir: str = key(
        "",
        "Directory of the on-disk prompt cache (relative paths are from the "
        "project directory); empty means local-models/.prompt-cache.",
    )
    prompt_cache_disk_bytes: Size = key(
        parse_size("32GiB"),
        "Size cap of the on-disk prompt cache; the least useful entries go first.",
        parse=parse_size,
        check=positive,
        check_text="more than 0 bytes",
    )
    memory_limit: Size | Literal["auto"] = key(
        "auto",
        "Memory the server may use (e.g. 96GB), instead of what start measures: "
        "on macOS the GPU's wired limit, on CUDA the GPU's memory, on Linux the "
        "available RAM. Start refuses settings that do not fit (--plan prints "
        "the plan).",
        parse=parse_size_or_auto,
        check=lambda v: v == "auto" or v > 0,
        check_text="auto, or more than 0 bytes",
    )
    temperature: float = key(
        1.0,
        "Default sampling temperature (MiniMax recommends 1.0).",
        check=non_negative,
        check_text="0 or more",
    )
    top_p: float = key(
        0.95,
        "Default nucleus sampling top-p.",
        check=lambda v: 0 <= v <= 1,
        check_text="a number from 0 to 1",
    )
    top_k: int = key(
        40, "Default top-k sampling (0 turns it off).", check=non_negative, check_text="0 or more"
    )
    prefill_step_size: int = key(
        2048, "Prompt tokens processed per step.", check=positive, check_text="a number above 0"
    )
    concurrency: int = key(
        8,
        "Requests the engine serves at once: their prompts prefill in turn, "
        "shortest first, and they decode together in one batch; more wait "
        "(see max_pending). 1 serves one request at a time.",
        check=positive,
        check_text="a number above 0",
    )
    cpu_blas: str = key(
        "auto",
        "Linux on the CPU backend only: the BLAS mlx's matrix products call. "
        "'auto' loads a system OpenBLAS where one is installed (Debian/Ubuntu: "
        "apt-get install libopenblas0-pthread), several times faster than the "
        "reference BLAS mlx's CPU wheel ships; 'bundled' keeps that one; or the "
        "path of a BLAS library.",
        check=blas.valid,
        check_text="auto, bundled or the path of a BLAS library",
    )
    api_key: str = key(
        "",
        "If set, every request must carry it as 'Authorization: Bearer KEY' or "
        "'x-api-key: KEY'. As a flag (--api-key) it is visible to every local "
        "user in `ps`: prefer api_key_file or MLX_NATIVE_SERVER_API_KEY.",
    )
    api_key_file: str = key(
        "",
        "Path of a file whose first line is the API key (relative paths are from "
        "the project directory), read when the server starts; keep it readable by "
        "you only (chmod 600). Empty means none; cannot be combined with api_key.",
    )
    allowed_origins: str = key(
        "",
        "Comma-separated web origins (e.g. https://app.example) whose pages may "
        "call the API, with CORS headers; '*' allows any. Loopback origins "
        "(http://localhost:PORT, http://127.0.0.1:PORT) are always allowed; a "
        "request from any other Origin is refused with 403.",
    )
    allowed_hosts: str = key(
        "",
        "Comma-separated extra host names the server answers to in the Host "
        "header, besides loopback names, IP addresses and the bound host; '*' "
        "allows any. Other names get 403, so a web page cannot reach the server "
        "by DNS rebinding.",
    )
    log_dir: str = key("logs", "Directory of the log files.")
    log_level: str = key(
        "INFO", "Log level.", parse=parse_upper, choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    log_max_bytes: Size = key(
        parse_size("10MiB"),
        "Size at which a log file is rotated.",
        parse=parse_size,
        check=positive,
        check_text="more than 0 bytes",
    )
    log_backups: int = key(3, "Rotated log files kept.", check=non_negative, check_text="0 or more")
    max_pending: int = key(
        8,
        "Requests allowed to wait for the engine while it is busy with others; "
        "more are refused at once (429 for OpenAI clients, 529 overloaded_error "
        "for Anthropic ones, both with Retry-After).",
        check=positive,
        check_text="a number above 0",
    )
    max_body_bytes: Size = key(
        parse_size("64MiB"),
        "Largest request body accepted.",
        parse=parse_size,
        check=positive,
        check_text="more than 0 bytes",
    )
    request_timeout: float = key(
        30.0,
        "Deadline in seconds for receiving a whole request (headers and body) "
        "from its first byte; a client still sending then gets 408 and is "
        "disconnected, however steadily it drips.",
        check=positive,
        check_text="more than 0 seconds",
    )
    keepalive_interval: float = key(
        5.0,
        "Seconds of silence after which a stream gets a keep-alive.",
        check=positive,
        check_text="more than 0 seconds",
    )
    shutdown_timeout: float = key(
        10.0,
        "Seconds a stop waits for the request in flight before cancelling it.",
        check=non_negative,
        check_text="0 or more seconds",
    )
    start_timeout: float = key(
        900.0,
        "Seconds start waits for the model to load and /health to answer.",
        check=positive,
        check_text="more than 0 seconds",
    )
    stop_timeout: float = key(
        20.0,
        "Seconds stop waits after SIGTERM before it sends SIGKILL.",
        check=positive,
        check_text="more than 0 seconds",
    )
    watchdog_interval: float = key(
        5.0,
        "Seconds between checks that the generation engine is alive (0 turns the watchdog off).",
        check=non_negative,
        check_text="0 or more seconds",
    )
    watchdog_stall_timeout: float = key(
        300.0,
        "Seconds a request may wait on the engine with no progress at all (no "
        "token, no prefill progress report, for any request) before the "
        "watchdog declares the engine hung and exits so the service manager "
        "restarts it (0 turns this check off). Prefill reports progress every "
        "prefill_step_size tokens: keep this well above the time of one such step.",
        check=non_negative,
        check_text="0 or more seconds",
    )
    pipeline: bool = key(
        False,
        "Under mlx.launch, split the model by layers (pipeline) instead of tensor parallelism.",
    )

    # Not settings: where each value came from, and every path.
    origins: Mapping[str, str] = field(metadata=NOT_A_KEY)
    paths: Paths = field(metadata=NOT_A_KEY)

    @property
    def values(self) -> dict[str, Any]:
        """Every key's value by name (a copy: the settings stay frozen)."""
        return {k.name: getattr(self, k.name) for k in KEYS}

    def origin(self, name: str) -> str:
        """Where key `name` came from: "default", "set by --port", ..."""
        return self.origins[name]

    def replace(self, **changes: Any) -> Settings:
        """A copy with these keys changed, their origin "set by the program".
        A name that is not a key is a TypeError (a typo, caught)."""
        unknown = sorted(set(changes) - set(KEYS_BY_NAME))
        if unknown:
            raise TypeError(f"Settings.replace: no key named {', '.join(unknown)}")
        origins = {**self.origins, **dict.fromkeys(changes, "set by the program")}
        return dataclasses.replace(self, origins=origins, **changes)

    @property
    def model_path(self) -> Path:
        if self.model == "demo":
            return self.paths.demo_model
        return self.paths.resolve(self.model)

    @property
    def base_url(self) -> str:
        host = "localhost" if self.host in ("127.0.0.1", "::1", "localhost") else self.host
        return f"http://{host}:{self.port}/v1"


KEYS: tuple[Key, ...] = keys_of(Settings)
KEYS_BY_NAME = {k.name: k for k in KEYS}
