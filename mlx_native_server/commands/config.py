"""`python -m mlx_native_server config`: the effective configuration and origins."""

from __future__ import annotations

import argparse

from ..core import config, config_docs
from ..core.errors import reported


@reported
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="mlx_native_server config",
        description="Print the effective configuration and where each value came from.",
    )
    p.add_argument(
        "--example",
        action="store_true",
        help="print the documented example config file (server.toml) instead",
    )
    p.add_argument(
        "--markdown", action="store_true", help="print the README's configuration table instead"
    )
    config.add_flags(p)
    args = p.parse_args(argv)
    if args.markdown:
        print(config_docs.markdown_table())
        return 0
    if args.example:
        print(config_docs.example_file(), end="")
        return 0
    print(config.describe(config.load({k.name: getattr(args, k.name) for k in config.KEYS})))
    return 0
