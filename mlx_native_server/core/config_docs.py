"""Docs derived from the settings schema: the committed server.toml and the
README's configuration table (tests keep both in step with config.KEYS)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import KEYS
from .config_values import Key, human_size, parse_bool, parse_size, parse_str


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _valid_text(key: Key) -> str:
    if key.choices:
        return "one of " + ", ".join(_toml_value(c) for c in key.choices)
    if key.check_text:
        return key.check_text
    named: dict[Callable[[Any], Any], str] = {
        parse_bool: "true or false",
        parse_size: "a size such as 8GB or 512MiB",
    }
    return named.get(key.parse, "a string" if key.parse is parse_str else "a number")


def _default(key: Key) -> Any:
    return human_size(key.default) if key.parse is parse_size else key.default


def example_file() -> str:
    """server.toml as committed: every key documented, commented out at its default."""
    import textwrap

    out = [
        "# mlx-native-server configuration.",
        "#",
        "# Every key is shown at its default, commented out: uncomment a line to",
        "# change it. Precedence: command-line flag > MLX_NATIVE_SERVER_<KEY>",
        "# environment variable > this file > default.",
        "# './start-server.sh --print-config' shows the effective values and where",
        "# each came from. Regenerate this file with",
        "# 'python -m mlx_native_server config --example > server.toml'.",
    ]
    for key in KEYS:
        out.append("")
        out += ["# " + line for line in textwrap.wrap(key.help, 74)]
        out.append(f"# Valid: {_valid_text(key)}. Flag: {key.flag}. Env: {key.env}.")
        out.append(f"# {key.name} = {_toml_value(_default(key))}")
    return "\n".join(out) + "\n"


def markdown_table() -> str:
    """The configuration table the README shows (kept in step by a test)."""
    rows = [
        "| key | default | environment variable | flag | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in KEYS:
        rows.append(
            f"| `{key.name}` | `{_toml_value(_default(key))}` | `{key.env}` "
            f"| `{key.flag}` | {key.help} |"
        )
    return "\n".join(rows)
