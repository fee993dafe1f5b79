"""`./stop-server.sh`: SIGTERM, a bounded wait, then SIGKILL.

The server is found by its pid file, else by the process listening on the
port (only if it is an mlx-native-server). Not running is not an error.
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from ..core import config
from ..core.errors import UserError, reported
from ..core.ports import command_of, pid_alive, read_pid, who_listens
from . import _flags


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stop-server.sh", description="Stop a running server.")
    config.add_flags(p, names=("port", "stop_timeout"))
    return p


def find_server(settings: config.Settings) -> int | None:
    """The pid of our server on the configured port, or None."""
    pid = read_pid(settings.paths.pid_file(settings.port))
    if pid is not None and "mlx_native_server" in command_of(pid):
        return pid
    holder = who_listens(settings.port)
    if holder and holder.pid and "mlx_native_server" in holder.command:
        return holder.pid
    if holder is not None:
        raise UserError(
            f"port {settings.port} is held by {holder.describe()}, which is not "
            "mlx-native-server; stop it yourself if you mean to."
        )
    return None


def terminate(pid: int, timeout: float) -> str:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL. Says what happened."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "already gone"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid) or _is_zombie(pid):
            return "stopped"
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    return f"did not stop within {timeout:g}s; killed"


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@reported
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    settings = _flags.settings(args, ("port", "stop_timeout"))
    # With the login service installed, stop it through its manager, so that
    # it stays stopped instead of being restarted.
    from ..service import manager as service

    outcome = service.stop_service(settings)
    if outcome is not None:
        print(outcome)
        return 0
    pid = find_server(settings)
    if pid is None:
        print(f"mlx-native-server is not running on port {settings.port}.")
        return 0
    outcome = terminate(pid, settings.stop_timeout)
    print(f"mlx-native-server (pid {pid}, port {settings.port}): {outcome}.")
    pid_file = settings.paths.pid_file(settings.port)
    if read_pid(pid_file) is None:
        pid_file.unlink(missing_ok=True)
    return 0
