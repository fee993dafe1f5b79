"""What a service manager says about the login service, in one shape."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict

from ..core import filemodes


class StateBase(TypedDict):
    """The ServiceState fields a manager knows before asking it, spread
    into every state it builds: `ServiceState(**base, loaded=...)`."""

    manager: str
    name: str
    file: Path
    installed: bool


@dataclass(frozen=True)
class ServiceState:
    manager: str  # "launchd" or "systemd"
    name: str  # the launchd label or the systemd unit
    file: Path  # the plist or unit file
    installed: bool  # the file exists
    loaded: bool | None  # known to the manager; None when it could not be asked
    running: bool
    pid: int | None
    last_exit: int | None  # exit status of the last run; negative: killed by that signal
    state: str = ""  # the manager's own word: running, waiting, active, failed ...
    detail: str = ""  # why `loaded` is None, or other news

    def to_json(self) -> dict:
        out = asdict(self)
        out["file"] = str(self.file)
        return out

    @property
    def last_exit_text(self) -> str:
        return exit_text(self.last_exit)


def exit_text(last_exit: int | None) -> str:
    if last_exit is None:
        return "none yet"
    if last_exit < 0:
        return f"killed by signal {-last_exit}"
    return f"exit status {last_exit}"


def write_file(path: Path, content: bytes, private: bool) -> None:
    """Write atomically; a private file (an API key inside) is 0600 from the
    moment it exists, never visible to others even as a temporary file."""
    filemodes.write_atomic(path, content, filemodes.PRIVATE_FILE if private else 0o644)


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.2) -> bool:
    """Poll `check` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
