"""The one user-facing exception, and the one place that reports it."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

log = logging.getLogger("mlx_native_server")


class UserError(Exception):
    """An expected failure: one sentence that says what is wrong and what to run next."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def reported(main: Callable[..., int]) -> Callable[..., int]:
    """Turn UserError into 'error: …' on stderr and its exit code; no traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as e:
            log.debug("user error", exc_info=True)
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            return 130

    return wrapper
