"""Settings: one precedence chain, implemented once.

flag > environment variable > config file > default. Every value remembers
where it came from, so `config` can print the effective configuration with
its origins and error messages can say "(set in server.toml)".

`Settings` is the one schema (config_schema.py): one typed field per key,
declared with key(). KEYS (flags, environment names, TOML validation, docs)
is derived from it. This module is the one entry point: callers import the
schema, `load`, `add_flags` and `describe` from here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config_schema import KEYS, KEYS_BY_NAME, Settings
from .config_values import (
    ENV_PREFIX,
    Key,
    human_size,
    parse_bool,
    parse_size,
    parse_size_or_auto,
)
from .errors import UserError
from .key_file import read_key
from .paths import Paths

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Re-exported: callers import these from core.config.
__all__ = [
    "ENV_PREFIX",
    "KEYS",
    "KEYS_BY_NAME",
    "Key",
    "Settings",
    "add_flags",
    "describe",
    "human_size",
    "load",
    "parse_bool",
    "parse_size",
    "parse_size_or_auto",
]


def add_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add one flag per key (all keys, or those named), help from the schema."""
    group = parser.add_argument_group("configuration (flag > environment > config file > default)")
    for k in KEYS:
        if names is not None and k.name not in names:
            continue
        group.add_argument(
            k.flag,
            dest=k.name,
            default=None,
            metavar=k.name.upper(),
            help=f"{k.help} [env {k.env}; default {k.default!r}]",
        )


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, OSError) as e:
        raise UserError(
            f"config file {path} cannot be read: {e}. Fix it or move it away."
        ) from None
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
    for k in KEYS:
        if flags.get(k.name) is not None:
            origin, raw = f"set by {k.flag}", flags[k.name]
        elif environ.get(k.env) is not None:
            origin, raw = f"set by {k.env}", environ[k.env]
        elif k.name in file_values:
            origin, raw = file_label, file_values[k.name]
        else:
            origins[k.name] = "default"
            values[k.name] = k.default
            continue
        values[k.name] = k.convert(raw, origin)
        origins[k.name] = origin
    _api_key_from_file(values, origins, paths)
    return Settings(**values, origins=origins, paths=paths.with_log_dir(values["log_dir"]))


def _api_key_from_file(values: dict[str, Any], origins: dict[str, str], paths: Paths) -> None:
    """Fill api_key from api_key_file, so the rest of the code reads one
    settings.api_key whichever way the key was given."""
    name = values["api_key_file"]
    if not name:
        return
    where = f"api_key_file = {name!r} ({origins['api_key_file']})"
    if values["api_key"]:
        raise UserError(
            f"api_key ({origins['api_key']}) and {where} are both set; "
            "keep one of them (api_key_file keeps the key out of `ps`)."
        )
    path = paths.resolve(name)
    values["api_key"] = read_key(path, where)
    origins["api_key"] = f"read from {path} (api_key_file)"


def describe(settings: Settings) -> str:
    """The effective configuration, one key a line, with its origin."""
    width = max(len(k.name) for k in KEYS)
    lines = [f"# config file: {settings.paths.config_file}"]
    for k in KEYS:
        value = getattr(settings, k.name)
        if k.name == "api_key" and value:
            value = "(set)"
        elif k.parse in (parse_size, parse_size_or_auto) and isinstance(value, int):
            value = human_size(value)
        lines.append(f"{k.name:<{width}} = {value!r:<40} # {settings.origin(k.name)}")
    return "\n".join(lines)
