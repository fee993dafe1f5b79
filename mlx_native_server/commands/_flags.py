"""What the verb modules share: the configuration flags of a parsed command
line, turned into Settings. The Namespace stops here; below commands/ the
layers take Settings."""

from __future__ import annotations

import argparse

from ..core import config


def flags(args: argparse.Namespace, names: tuple[str, ...] | None = None) -> dict[str, str | None]:
    """{key name: the flag's value or None} for every key (or those named)
    that config.add_flags gave the parser."""
    return {k.name: getattr(args, k.name) for k in config.KEYS if names is None or k.name in names}


def settings(args: argparse.Namespace, names: tuple[str, ...] | None = None) -> config.Settings:
    """The effective settings: these flags over environment, config file, defaults."""
    return config.load(flags(args, names))


def given(args: argparse.Namespace) -> tuple[str, ...]:
    """The configuration flags given on the command line, as argv
    (what install-service records in the service)."""
    out: list[str] = []
    for key in config.KEYS:
        value = getattr(args, key.name)
        if value is not None:
            out += [key.flag, str(value)]
    return tuple(out)
