"""bench-local.py as a module (its file name has a hyphen), for the
benchmarks that reuse its clients and arithmetic; any file as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def import_file(name: str, path: Path):
    """Import the Python file at `path` as module `name` (once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def load_bench_local():
    """Import ../bench-local.py once, as `bench_local`."""
    return import_file("bench_local", REPO / "bench-local.py")
