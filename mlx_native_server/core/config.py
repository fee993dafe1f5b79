"""Settings: one precedence chain, implemented once.

flag > environment variable > config file > default. Every value remembers
where it came from, so `config` can print the effective configuration with
its origins and error messages can say "(set in server.toml)".
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import UserError
from .key_file import read_key
from .paths import Paths

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "MLX_NATIVE_SERVER_"

_SIZE_UNITS = {
    "": 1, "B": 1,
    "K": 10**3, "KB": 10**3, "KIB": 2**10,
    "M": 10**6, "MB": 10**6, "MIB": 2**20,
    "G": 10**9, "GB": 10**9, "GIB": 2**30,
    "T": 10**12, "TB": 10**12, "TIB": 2**40,
}


def parse_size(text: Any) -> int:
    """'8GB', '512MiB', '1.5G' or a plain number of bytes -> bytes."""
    if isinstance(text, bool):
        raise ValueError("a size, such as 8GB or 512MiB")
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().upper().replace(" ", "")
    i = 0
    while i < len(s) and (s[i].isdigit() or s[i] == "."):
        i += 1
    if i == 0 or s[i:] not in _SIZE_UNITS:
        raise ValueError("a size, such as 8GB or 512MiB")
    return int(float(s[:i]) * _SIZE_UNITS[s[i:]])


def parse_size_or_auto(text: Any) -> Any:
    """'auto' (left for the memory plan to decide) or a size, as parse_size."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        return parse_size(text)
    except ValueError:
        raise ValueError("a size, such as 8GB or 512MiB, or auto") from None


def human_size(n: int) -> str:
    """17179869184 -> '16GiB' (exact binary or decimal units only)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10),
                       ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def parse_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    s = str(text).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("true or false")


def _int(text: Any) -> int:
    if isinstance(text, bool):
        raise ValueError("a whole number")
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ValueError("a whole number") from None


def _float(text: Any) -> float:
    if isinstance(text, bool):
        raise ValueError("a number")
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError("a number") from None


def _str(text: Any) -> str:
    if not isinstance(text, (str, int, float)) or isinstance(text, bool):
        raise ValueError("a string")
    return str(text)


@dataclass(frozen=True)
class Key:
    """One setting: its name, type, default and the help the docs show."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple = ()
    check: Callable[[Any], bool] | None = None
    check_text: str = ""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, raw: Any, origin: str) -> Any:
        try:
            value = self.parse(raw)
        except ValueError as e:
            raise UserError(
                f"{self.name} = {raw!r} ({origin}) is not valid: expected {e}."
            ) from None
        if self.choices and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise UserError(
                f"{self.name} = {raw!r} ({origin}) is not valid: expected one of {allowed}."
            )
        if self.check is not None and not self.check(value):
            raise UserError(
                f"{self.name} = {raw!r} ({origin}) is not valid: expected {self.check_text}."
            )
        return value


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


KEYS: tuple[Key, ...] = (
    Key("model", _str, "local-models/MiniMax-M2.1-REAP-50-MLX-4bit",
        "Path of the MLX model directory (relative paths are from the project "
        "directory), or 'demo' for a tiny generated model that answers random text."),
    Key("host", _str, "127.0.0.1",
        "Address to listen on. Anything but a loopback address needs api_key."),
    Key("port", _int, 8000, "TCP port to listen on.",
        check=lambda v: 0 < v < 65536, check_text="a port from 1 to 65535"),
    Key("served_model_id", _str, "mlx-local",
        "Model id the API reports in /v1/models and answers to."),
    Key("max_tokens", _int, 120000,
        "Context cap in tokens: prompt plus answer. A request's max_tokens is "
        "clamped to what remains; a longer prompt is refused with "
        "context_length_exceeded.", check=_positive, check_text="a number above 0"),
    Key("kv_bits", _int, 4,
        "Bits per KV-cache value: 4 or 8 quantize the cache, 0 keeps full precision.",
        choices=(0, 2, 3, 4, 5, 6, 8)),
    Key("kv_group_size", _int, 64, "Group size of KV-cache quantization.",
        choices=(32, 64, 128)),
    Key("quantized_kv_start", _int, 5000,
        "Tokens kept in full precision before the KV cache is quantized.",
        check=_non_negative, check_text="0 or more"),
    Key("prompt_cache_size", _int, 8,
        "Most prompt KV states kept in memory (agent sessions, their shared "
        "prefix, side requests), within prompt_cache_bytes; 0 keeps none. "
        "CACHE.md explains the policy.",
        check=_non_negative, check_text="0 or more"),
    Key("prompt_cache_bytes", parse_size_or_auto, "auto",
        "Memory budget of the prompt cache (e.g. 8GB, 512MiB); 0 means no byte "
        "limit; auto takes what the memory plan leaves, up to 16GiB "
        "(KV_CACHE_QUANTIZATION.md, Memory plan).",
        check=lambda v: v == "auto" or v >= 0, check_text="auto, or 0 or more bytes"),
    Key("prompt_cache_disk", parse_bool, True,
        "Write prompt KV states evicted from memory, and the live ones at a clean "
        "stop, to prompt_cache_dir, and reuse them, also after a restart."),
    Key("prompt_cache_dir", _str, "",
        "Directory of the on-disk prompt cache (relative paths are from the "
        "project directory); empty means local-models/.prompt-cache."),
    Key("prompt_cache_disk_bytes", parse_size, parse_size("32GiB"),
        "Size cap of the on-disk prompt cache; the least useful entries go first.",
        check=_positive, check_text="more than 0 bytes"),
    Key("memory_limit", parse_size_or_auto, "auto",
        "Memory the server may use (e.g. 96GB), instead of what start measures: "
        "on macOS the GPU's wired limit, on CUDA the GPU's memory, on Linux the "
        "available RAM. Start refuses settings that do not fit (--plan prints "
        "the plan).",
        check=lambda v: v == "auto" or v > 0, check_text="auto, or more than 0 bytes"),
    Key("temperature", _float, 1.0,
        "Default sampling temperature (MiniMax recommends 1.0).",
        check=_non_negative, check_text="0 or more"),
    Key("top_p", _float, 0.95, "Default nucleus sampling top-p.",
        check=lambda v: 0 <= v <= 1, check_text="a number from 0 to 1"),
    Key("top_k", _int, 40, "Default top-k sampling (0 turns it off).",
        check=_non_negative, check_text="0 or more"),
    Key("prefill_step_size", _int, 2048, "Prompt tokens processed per step.",
        check=_positive, check_text="a number above 0"),
    Key("api_key", _str, "",
        "If set, every request must carry it as 'Authorization: Bearer KEY' or "
        "'x-api-key: KEY'. As a flag (--api-key) it is visible to every local "
        "user in `ps`: prefer api_key_file or MLX_NATIVE_SERVER_API_KEY."),
    Key("api_key_file", _str, "",
        "Path of a file whose first line is the API key (relative paths are from "
        "the project directory), read when the server starts; keep it readable by "
        "you only (chmod 600). Empty means none; cannot be combined with api_key."),
    Key("allowed_origins", _str, "",
        "Comma-separated web origins (e.g. https://app.example) whose pages may "
        "call the API, with CORS headers; '*' allows any. Loopback origins "
        "(http://localhost:PORT, http://127.0.0.1:PORT) are always allowed; a "
        "request from any other Origin is refused with 403."),
    Key("allowed_hosts", _str, "",
        "Comma-separated extra host names the server answers to in the Host "
        "header, besides loopback names, IP addresses and the bound host; '*' "
        "allows any. Other names get 403, so a web page cannot reach the server "
        "by DNS rebinding."),
    Key("log_dir", _str, "logs", "Directory of the log files."),
    Key("log_level", lambda v: _str(v).upper(), "INFO", "Log level.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Key("log_max_bytes", parse_size, parse_size("10MiB"),
        "Size at which a log file is rotated.", check=_positive,
        check_text="more than 0 bytes"),
    Key("log_backups", _int, 3, "Rotated log files kept.",
        check=_non_negative, check_text="0 or more"),
    Key("max_pending", _int, 8,
        "Requests allowed to wait for the engine while it is busy with others; "
        "more are refused at once (429 for OpenAI clients, 529 overloaded_error "
        "for Anthropic ones, both with Retry-After).",
        check=_positive, check_text="a number above 0"),
    Key("max_body_bytes", parse_size, parse_size("64MiB"),
        "Largest request body accepted.", check=_positive,
        check_text="more than 0 bytes"),
    Key("request_timeout", _float, 30.0,
        "Deadline in seconds for receiving a whole request (headers and body) "
        "from its first byte; a client still sending then gets 408 and is "
        "disconnected, however steadily it drips.",
        check=_positive, check_text="more than 0 seconds"),
    Key("keepalive_interval", _float, 5.0,
        "Seconds of silence after which a stream gets a keep-alive.",
        check=_positive, check_text="more than 0 seconds"),
    Key("shutdown_timeout", _float, 10.0,
        "Seconds a stop waits for the request in flight before cancelling it.",
        check=_non_negative, check_text="0 or more seconds"),
    Key("start_timeout", _float, 900.0,
        "Seconds start waits for the model to load and /health to answer.",
        check=_positive, check_text="more than 0 seconds"),
    Key("stop_timeout", _float, 20.0,
        "Seconds stop waits after SIGTERM before it sends SIGKILL.",
        check=_positive, check_text="more than 0 seconds"),
    Key("watchdog_interval", _float, 5.0,
        "Seconds between checks that the generation engine is alive (0 turns "
        "the watchdog off).", check=_non_negative, check_text="0 or more seconds"),
    Key("watchdog_stall_timeout", _float, 300.0,
        "Seconds a request may wait on the engine with no progress at all (no "
        "token, no prefill progress report, for any request) before the "
        "watchdog declares the engine hung and exits so the service manager "
        "restarts it (0 turns this check off). Prefill reports progress every "
        "prefill_step_size tokens: keep this well above the time of one such step.",
        check=_non_negative, check_text="0 or more seconds"),
    Key("pipeline", parse_bool, False,
        "Under mlx.launch, split the model by layers (pipeline) instead of "
        "tensor parallelism."),
)

KEYS_BY_NAME = {k.name: k for k in KEYS}


@dataclass(frozen=True)
class Settings:
    """The effective configuration. `origins` says where each value came from."""

    values: Mapping[str, Any]
    origins: Mapping[str, str]
    paths: Paths

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def origin(self, name: str) -> str:
        return self.origins[name]

    def replace(self, **changes: Any) -> "Settings":
        values = dict(self.values)
        origins = dict(self.origins)
        for name, value in changes.items():
            values[name] = value
            origins[name] = "set by the program"
        return dataclasses.replace(self, values=values, origins=origins)

    @property
    def model_path(self) -> Path:
        if self.model == "demo":
            return self.paths.demo_model
        return self.paths.resolve(self.model)

    @property
    def base_url(self) -> str:
        host = "localhost" if self.host in ("127.0.0.1", "::1", "localhost") else self.host
        return f"http://{host}:{self.port}/v1"


def add_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add one flag per key (all keys, or those named), help from the schema."""
    group = parser.add_argument_group("configuration (flag > environment > config file > default)")
    for key in KEYS:
        if names is not None and key.name not in names:
            continue
        group.add_argument(
            key.flag, dest=key.name, default=None, metavar=key.name.upper(),
            help=f"{key.help} [env {key.env}; default {key.default!r}]",
        )


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, OSError) as e:
        raise UserError(f"config file {path} cannot be read: {e}. Fix it or move it away.") from None
    unknown = sorted(set(data) - set(KEYS_BY_NAME))
    if unknown:
        raise UserError(
            f"config file {path} has unknown key(s) {', '.join(unknown)}; "
            f"run './start-server.sh --print-config' to see the known keys."
        )
    return data


def load(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    paths: Paths | None = None,
) -> Settings:
    """Resolve every key: flag > environment > config file > default."""
    environ = os.environ if environ is None else environ
    paths = paths or Paths.from_env(environ)
    flags = flags or {}
    file_values = _read_file(paths.config_file)
    try:
        file_label = f"set in {paths.config_file.relative_to(paths.home)}"
    except ValueError:
        file_label = f"set in {paths.config_file}"
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key in KEYS:
        if flags.get(key.name) is not None:
            origin, raw = f"set by {key.flag}", flags[key.name]
        elif environ.get(key.env) is not None:
            origin, raw = f"set by {key.env}", environ[key.env]
        elif key.name in file_values:
            origin, raw = file_label, file_values[key.name]
        else:
            origins[key.name] = "default"
            values[key.name] = key.default
            continue
        values[key.name] = key.convert(raw, origin)
        origins[key.name] = origin
    _api_key_from_file(values, origins, paths)
    return Settings(values=values, origins=origins, paths=paths.with_log_dir(values["log_dir"]))


def _api_key_from_file(values: dict[str, Any], origins: dict[str, str], paths: Paths) -> None:
    """Fill api_key from api_key_file, so the rest of the code reads one
    settings.api_key whichever way the key was given."""
    name = values["api_key_file"]
    if not name:
        return
    where = f"api_key_file = {name!r} ({origins['api_key_file']})"
    if values["api_key"]:
        raise UserError(f"api_key ({origins['api_key']}) and {where} are both set; "
                        "keep one of them (api_key_file keeps the key out of `ps`).")
    path = paths.resolve(name)
    values["api_key"] = read_key(path, where)
    origins["api_key"] = f"read from {path} (api_key_file)"


def describe(settings: Settings) -> str:
    """The effective configuration, one key a line, with its origin."""
    width = max(len(k.name) for k in KEYS)
    lines = [f"# config file: {settings.paths.config_file}"]
    for key in KEYS:
        value = settings.values[key.name]
        if key.name == "api_key" and value:
            value = "(set)"
        elif key.parse in (parse_size, parse_size_or_auto) and isinstance(value, int):
            value = human_size(value)
        lines.append(f"{key.name:<{width}} = {value!r:<40} # {settings.origins[key.name]}")
    return "\n".join(lines)
