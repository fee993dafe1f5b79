"""`python -m mlx_native_server demo`: write the tiny random-weight demo model."""

from __future__ import annotations

import argparse

from ..core.errors import reported
from ..core.paths import Paths
from ..models import demo as demo_model


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mlx_native_server demo", description=demo_model.BANNER
    )
    p.add_argument(
        "--path",
        help="where to write it (default: local-models/demo; "
        "a relative path is taken from the project home)",
    )
    p.add_argument("--force", action="store_true", help="regenerate even if up to date")
    p.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    return p


@reported
def main(argv: list[str]) -> int:
    """`python -m mlx_native_server demo [--path P] [--force] [--seed N]`."""
    args = parser().parse_args(argv)
    paths = Paths.from_env()
    print(demo_model.BANNER)
    path = paths.resolve(args.path) if args.path else paths.demo_model
    demo_model.generate(path, seed=args.seed, force=args.force)
    return 0
