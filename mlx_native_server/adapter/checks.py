"""How one row of the adapter's contract is checked against the mlx-lm that
imports: one kind of row per way the adapter relies on upstream.

`Call` a callable it calls with these parameters, `Attr` an attribute it
reads (or one upstream's instances set), `Global` a module global it
replaces, `Uses` upstream code it relies on as written, and `Reads` the
attributes upstream reads off an object of ours. Each row's `check(load)`
returns one sentence per thing that moved, [] when nothing did. Standard
library only: contract.py lists the rows.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Importer = Callable[[str], Any]


class _Missing(Exception):
    """A row's module or attribute is not there; the message says which."""


def _resolve(load: Importer, module: str, dotted: str) -> Any:
    try:
        obj = load(module)
    except Exception as e:
        raise _Missing(f"{module} does not import ({type(e).__name__}: {e})") from None
    path = module
    for part in dotted.split("."):
        path += "." + part
        if not hasattr(obj, part):
            raise _Missing(f"{path} is missing")
        obj = getattr(obj, part)
    return obj


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


@dataclass(frozen=True)
class Call:
    """A callable the adapter calls (or overrides): `args` are passed by
    position, in this order; `kwargs` by name."""

    module: str
    name: str
    args: tuple[str, ...] = ()
    kwargs: tuple[str, ...] = ()

    def check(self, load: Importer) -> list[str]:
        where = f"{self.module}.{self.name}"
        try:
            sig = inspect.signature(_resolve(load, self.module, self.name))
        except _Missing as e:
            return [str(e)]
        except (TypeError, ValueError):
            return [f"{where} is no longer a callable with a signature"]
        params = [p for p in sig.parameters.values() if p.name != "self"]
        positional = [
            p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        names = {p.name for p in params if p.kind != p.POSITIONAL_ONLY}
        has_var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
        found = []
        for i, name in enumerate(self.args):
            if i >= len(positional) or positional[i] != name:
                at = positional[i] if i < len(positional) else "nothing"
                found.append(
                    f"{where}: the adapter passes '{name}' as argument {i + 1}, "
                    f"upstream now takes {at} there (signature {sig})"
                )
        for name in self.kwargs:
            if name not in names and not has_var_kw:
                found.append(f"{where} has no parameter '{name}' (signature {sig})")
        return found


@dataclass(frozen=True)
class Attr:
    """An attribute the adapter reads: of a module, or of a class
    ("Class.attr"). With `instance`, one its instances set (`self.attr = ...`
    in the class's source, or a dataclass field)."""

    module: str
    name: str
    instance: bool = False

    def check(self, load: Importer) -> list[str]:
        if not self.instance:
            try:
                _resolve(load, self.module, self.name)
            except _Missing as e:
                return [str(e)]
            return []
        owner, _, attr = self.name.rpartition(".")
        try:
            cls = _resolve(load, self.module, owner)
        except _Missing as e:
            return [str(e)]
        is_dataclass = dataclasses.is_dataclass(cls)
        fields = {f.name for f in dataclasses.fields(cls)} if is_dataclass else set()
        sets = re.search(rf"\bself\.{re.escape(attr)}\s*(:[^=\n]*)?=(?!=)", _source(cls))
        if attr in fields or sets or attr in vars(cls):
            return []
        return [
            f"{self.module}.{self.name} is missing (no dataclass field and no "
            f"'self.{attr} =' in {owner}'s source)"
        ]


@dataclass(frozen=True)
class Global:
    """A module global the adapter replaces: upstream must still call it by
    that name from `caller` ("Class.method"), or the patch does nothing."""

    module: str
    name: str
    caller: str
    args: tuple[str, ...] = ()

    def check(self, load: Importer) -> list[str]:
        found = Call(self.module, self.name, self.args).check(load)
        try:
            source = _source(_resolve(load, self.module, self.caller))
        except _Missing as e:
            return found + [str(e)]
        if not re.search(rf"(?<![\w.]){re.escape(self.name)}\(", source):
            found.append(
                f"{self.module}.{self.caller} no longer calls {self.name}(), "
                f"so replacing {self.module}.{self.name} does nothing"
            )
        return found


@dataclass(frozen=True)
class Uses:
    """Upstream code the adapter depends on as written: `text` must appear in
    the source of `name` (`why` says what relies on it)."""

    module: str
    name: str
    text: str
    why: str

    def check(self, load: Importer) -> list[str]:
        try:
            source = _source(_resolve(load, self.module, self.name))
        except _Missing as e:
            return [str(e)]
        if self.text in source:
            return []
        return [f"{self.module}.{self.name} no longer has `{self.text}` ({self.why})"]


@dataclass(frozen=True)
class Reads:
    """Attributes upstream reads off an object the adapter hands it: every
    name `pattern` (one group) finds in the module's source must be in
    `provided`."""

    module: str
    pattern: str
    provided: tuple[str, ...]
    what: str

    def check(self, load: Importer) -> list[str]:
        try:
            source = _source(load(self.module))
        except Exception as e:
            return [f"{self.module} does not import ({type(e).__name__}: {e})"]
        read = sorted(set(re.findall(self.pattern, source)) - set(self.provided))
        return [
            f"{self.module} reads {name!r} off {self.what}, which does not set it" for name in read
        ]
