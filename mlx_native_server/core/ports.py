"""Who holds a TCP port, and whether a pid is alive."""

from __future__ import annotations

import errno
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from . import proc


@dataclass(frozen=True)
class Holder:
    pid: int | None
    command: str

    def describe(self) -> str:
        if self.pid is None:
            return "another process"
        return f"pid {self.pid} ({self.command})" if self.command else f"pid {self.pid}"


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return " ".join(raw.decode(errors="replace").split("\0")).strip()
    except OSError:
        r = proc.run(["ps", "-o", "command=", "-p", str(pid)], check=False)
        return r.stdout.strip()


def _linux_listen_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _linux_holder(port: int) -> int | None:
    inodes = _linux_listen_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(pid_dir.name)
        except OSError:
            continue
    return None


def who_listens(port: int) -> Holder | None:
    """The process listening on `port`, if it can be found."""
    pid = None
    if sys.platform.startswith("linux"):
        pid = _linux_holder(port)
    else:
        r = proc.run(["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-t"], check=False)
        first = r.stdout.split()
        pid = int(first[0]) if first and first[0].isdigit() else None
    if pid is None:
        return None
    return Holder(pid, command_of(pid))


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None
