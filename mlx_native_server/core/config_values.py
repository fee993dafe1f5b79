"""How one setting is read: text (a flag, an environment variable or a TOML
value) to a checked value, and the `key()` field that declares a setting.

config.Settings declares every key as a typed field made by `key()`; `keys_of`
turns those fields into the `Key` objects that flags, environment names, TOML
validation and the docs are generated from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UserError

ENV_PREFIX = "MLX_NATIVE_SERVER_"

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "KB": 10**3,
    "KIB": 2**10,
    "M": 10**6,
    "MB": 10**6,
    "MIB": 2**20,
    "G": 10**9,
    "GB": 10**9,
    "GIB": 2**30,
    "T": 10**12,
    "TB": 10**12,
    "TIB": 2**40,
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
    for unit, size in (
        ("TiB", 2**40),
        ("GiB", 2**30),
        ("MiB", 2**20),
        ("KiB", 2**10),
        ("TB", 10**12),
        ("GB", 10**9),
        ("MB", 10**6),
        ("KB", 10**3),
    ):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def parse_bool(text: Any) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case; empty is false) -> bool."""
    if isinstance(text, bool):
        return text
    s = str(text).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("true or false")


def parse_int(text: Any) -> int:
    """A whole number (a TOML true is not one, though Python calls it 1)."""
    if isinstance(text, bool):
        raise ValueError("a whole number")
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ValueError("a whole number") from None


def parse_float(text: Any) -> float:
    """A number, as a float."""
    if isinstance(text, bool):
        raise ValueError("a number")
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError("a number") from None


def parse_str(text: Any) -> str:
    """A string; a TOML number is taken as its text, a table or list is refused."""
    if not isinstance(text, (str, int, float)) or isinstance(text, bool):
        raise ValueError("a string")
    return str(text)


def parse_upper(text: Any) -> str:
    """A string, upper-cased (log levels)."""
    return parse_str(text).upper()


def positive(v: Any) -> bool:
    return v > 0


def non_negative(v: Any) -> bool:
    return v >= 0


# bool before int: True is an int too.
_PARSE_BY_TYPE: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (bool, parse_bool),
    (int, parse_int),
    (float, parse_float),
    (str, parse_str),
)


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
        """raw (text, or a TOML value) -> the checked value; a UserError naming
        the key, the value and its origin if it is not valid."""
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


_KEY = "mlx_native_server.key"  # the metadata entry of a field: its Key spec, or None
NOT_A_KEY = {_KEY: None}  # metadata of the fields that are not settings (origins, paths)


def key(
    default: Any,
    help: str,
    *,
    parse: Callable[[Any], Any] | None = None,
    choices: tuple = (),
    check: Callable[[Any], bool] | None = None,
    check_text: str = "",
) -> Any:
    """A settings field: its default and what the docs say of it. `parse`
    defaults to the reader of the default's type (bool, int, float or str)."""
    if parse is None:
        parse = next((p for t, p in _PARSE_BY_TYPE if isinstance(default, t)), None)
        if parse is None:
            raise TypeError(
                f"no parser for a default of type {type(default).__name__}; pass parse="
            )
    spec = {
        "parse": parse,
        "help": help,
        "choices": choices,
        "check": check,
        "check_text": check_text,
    }
    return dataclasses.field(default=default, metadata={_KEY: spec})


def keys_of(cls: type) -> tuple[Key, ...]:
    """The Key of every field made by key(), in field order. A field that is
    neither key() nor marked NOT_A_KEY is a mistake, refused at import."""
    keys = []
    for f in dataclasses.fields(cls):
        if _KEY not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with key() or mark it NOT_A_KEY")
        spec = f.metadata[_KEY]
        if spec is not None:
            keys.append(Key(f.name, default=f.default, **spec))
    return tuple(keys)
