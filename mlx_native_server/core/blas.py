"""Which BLAS mlx's CPU backend calls on Linux, and loading a fast one.

mlx's Linux CPU wheel (mlx[cpu]) links the reference BLAS of netlib, whose
matrix products are plain loops: on the demo-wide model a 40-token prefill
takes 1.9 s with it and 0.31 s with OpenBLAS, a decode step 52 ms and 30 ms,
and two sequences in one forward cost it twice one. A system OpenBLAS
exports the same functions (cblas_sgemm, sgemm_, ...), so when the server
process starts with it preloaded (LD_PRELOAD), mlx's calls land there.

`cpu_blas` (server.toml, MLX_NATIVE_SERVER_CPU_BLAS, --cpu-blas) picks it:
"auto" uses the first OpenBLAS of KNOWN that exists, "bundled" keeps mlx's
own, a path names a library. The process re-executes itself once with
LD_PRELOAD set (PRELOADED marks the second run). Nothing changes on macOS
(Accelerate, Metal) or with the CUDA backend.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

KNOWN = (  # where distributions install OpenBLAS with the standard symbol names
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",  # Debian, Ubuntu: libopenblas0-pthread
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",  # Fedora, RHEL: openblas
    "/usr/lib/libopenblas.so.0",  # Arch: openblas
)
PRELOADED = "MLX_NATIVE_SERVER_BLAS_PRELOADED"
HINT = (
    "install OpenBLAS for a faster CPU engine (Debian/Ubuntu: apt-get install libopenblas0-pthread)"
)


def applies(env: Mapping[str, str], platform: str | None = None) -> bool:
    """Only Linux on mlx's CPU backend links the reference BLAS."""
    linux = (platform or sys.platform).startswith("linux")
    return linux and env.get("MLX_NATIVE_SERVER_BACKEND", "cpu") == "cpu"


def choose(setting: str, exists: Callable[[str], bool] = os.path.exists) -> str | None:
    """The library to preload for `setting` ("auto", "bundled" or a path), or None."""
    if setting == "bundled":
        return None
    if setting != "auto":
        return setting
    return next((path for path in KNOWN if exists(path)), None)


def valid(setting: str) -> bool:
    """The config's check: auto, bundled or an existing file."""
    return setting in ("auto", "bundled") or Path(setting).is_file()


def preload(setting: str, env: Mapping[str, str] | None = None) -> None:
    """Re-execute this process with the chosen BLAS preloaded, where it applies
    and has not been done; returns when there is nothing to do."""
    env = os.environ if env is None else env
    if not applies(env) or env.get(PRELOADED):
        return
    library = choose(setting)
    if library is None:
        return
    preloads = " ".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    new_env = {**env, "LD_PRELOAD": preloads, PRELOADED: library}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], new_env)


def _mapped(library: str, maps: Path = Path("/proc/self/maps")) -> bool:
    """Whether the dynamic loader really loaded `library` (it skips a file it
    cannot preload, with a line on stderr, and the process goes on)."""
    try:
        return os.path.realpath(library) in maps.read_text()
    except OSError:
        return True  # no /proc: take the preload as done


def loaded(env: Mapping[str, str] | None = None) -> str | None:
    """The library this process preloaded in mlx's BLAS's place, or None."""
    env = os.environ if env is None else env
    library = env.get(PRELOADED)
    return library if library and applies(env) and _mapped(library) else None


def reference(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs on the reference BLAS of mlx's CPU wheel."""
    env = os.environ if env is None else env
    return applies(env) and loaded(env) is None


def describe(env: Mapping[str, str] | None = None) -> str:
    """The CPU BLAS this process runs, in words (the startup log, /status)."""
    env = os.environ if env is None else env
    if not applies(env):
        return "Accelerate" if sys.platform == "darwin" else "not used (the CUDA backend)"
    library = loaded(env)
    if library:
        return f"OpenBLAS ({library})" if library in KNOWN else f"preloaded {library}"
    failed = env.get(PRELOADED)
    why = f"the preload of {failed} failed; " if failed else ""
    return f"mlx's bundled reference BLAS (slow: {why}{HINT})"


@functools.cache
def current() -> str:
    """describe() for this process, worked out once: it cannot change."""
    return describe()
