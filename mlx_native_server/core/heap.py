"""Give freed heap memory back to the operating system (glibc on Linux).

A hostile or just large request body (up to max_body_bytes) passes through
several buffers on its way to a parsed dict; once freed, glibc keeps those
pages in the heaps of the threads that used them, so RSS only ever grows
(measured: +42 % over 10,000 fuzz requests, with mlx itself holding 11 MB).
Two glibc knobs bound that: fewer malloc arenas (each thread otherwise may
get its own heap), and malloc_trim once large bodies have come and gone.
Elsewhere (macOS's allocator returns large blocks itself) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("mlx_native_server.core.heap")

M_ARENA_MAX = -8  # mallopt parameter (malloc.h)
ARENAS = 2
LARGE_BODY_BYTES = 1 << 20  # a body at least this large asks for a trim

_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim  # noqa: B018  (glibc only: musl has none)
    except (OSError, AttributeError):
        _libc = None


def limit_arenas() -> None:
    """Before the server's threads start: at most ARENAS malloc heaps."""
    if _libc is not None:
        _libc.mallopt(M_ARENA_MAX, ARENAS)


class Trimmer:
    """`large_body()` from any thread; `trim_if_needed()` from the watch loop."""

    def __init__(self):
        self._due = False

    def large_body(self) -> None:
        self._due = True

    def trim_if_needed(self) -> None:
        if self._due and _libc is not None:
            self._due = False
            _libc.malloc_trim(0)
