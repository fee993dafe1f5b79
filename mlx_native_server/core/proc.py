"""Every subprocess call goes through here: the argv is logged, failures
become the user-facing error, and tests can swap in a recorder."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import UserError

log = logging.getLogger("mlx_native_server.core.proc")


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    what: str | None = None,
    hint: str = "",
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    capture: bool = True,
) -> Result:
    """Run argv; with check, a failure raises UserError naming `what` and `hint`."""
    argv = [str(a) for a in argv]
    log.debug("run: %s", shlex.join(argv))
    try:
        p = subprocess.run(
            argv, capture_output=capture, text=True, env=env, cwd=cwd, timeout=timeout
        )
    except FileNotFoundError:
        if not check:
            return Result(tuple(argv), 127, "", f"{argv[0]}: not found")
        raise UserError(
            f"'{argv[0]}' was not found on PATH{'; ' + hint if hint else '.'}"
        ) from None
    except subprocess.TimeoutExpired:
        if not check:
            return Result(tuple(argv), 124, "", f"timed out after {timeout}s")
        raise UserError(f"'{shlex.join(argv)}' did not finish within {timeout:g}s.") from None
    result = Result(tuple(argv), p.returncode, p.stdout or "", p.stderr or "")
    if result.returncode != 0:
        log.debug("exit %d: %s", result.returncode, result.stderr.strip())
        if check:
            detail = (result.stderr or result.stdout).strip().splitlines()
            last = detail[-1] if detail else f"exit status {result.returncode}"
            raise UserError(
                f"{what or shlex.join(argv)} failed: {last}{'; ' + hint if hint else '.'}"
            )
    return result
