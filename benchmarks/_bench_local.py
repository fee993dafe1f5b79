"""bench-local.py as a module (its file name has a hyphen), for the
benchmarks that reuse its clients and arithmetic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_bench_local():
    """Import ../bench-local.py once, as `bench_local`."""
    if "bench_local" in sys.modules:
        return sys.modules["bench_local"]
    spec = importlib.util.spec_from_file_location("bench_local", REPO / "bench-local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_local"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module
