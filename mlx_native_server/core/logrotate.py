"""Size-based rotation of the service's stdout.log and stderr.log.

launchd and systemd open these files and hand them to the server as fds 1
and 2, so the server cannot close and reopen them the way app.log's
RotatingFileHandler does. Instead it rotates them by copy-and-truncate: copy
to `.1` (older copies shift to `.2` ...), then empty the file in place. That
is safe only for a writer in append mode, so the server first reopens each
of its own fds that points at one of these files with O_APPEND (launchd and
systemd's `append:` already do). Lines written between the copy and the
truncate are lost; the server writes little there (its log goes to app.log),
so the window holds next to nothing. The files are 0600 (the service
manager may have created them with its umask; the server tightens them) and
each rotated copy is created 0600.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import filemodes


def adopt_append(fd: int, path: Path) -> bool:
    """If `fd` writes to `path`, reopen `path` in append mode onto `fd`."""
    try:
        mine, theirs = os.fstat(fd), path.stat()
    except OSError:
        return False
    if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
        return False
    new = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.dup2(new, fd)
    finally:
        os.close(new)
    return True


def rotate(path: Path, max_bytes: int, backups: int) -> bool:
    """Copy-and-truncate `path` once it holds `max_bytes` or more; True if it did."""
    try:
        if path.stat().st_size < max_bytes:
            return False
    except FileNotFoundError:
        return False
    if backups > 0:
        for i in range(backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{i}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{i + 1}"))
        _private_copy(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True


def _private_copy(src: Path, dest: Path) -> None:
    """Copy `src` to a new `dest` that is 0600 before the first byte lands."""
    dest.unlink(missing_ok=True)
    with open(src, "rb") as fin, open(filemodes.open_private(dest), "wb") as fout:
        shutil.copyfileobj(fin, fout)


class StreamLogs:
    """The service's stdout.log and stderr.log, kept under the size cap."""

    def __init__(self, stdout_log: Path, stderr_log: Path, max_bytes: int, backups: int):
        self.files = (stdout_log, stderr_log)
        self.max_bytes = max_bytes
        self.backups = backups

    def adopt(self) -> None:
        """Make fds 1 and 2 append-mode when they write to these files, and
        the files and their rotated copies owner-only."""
        for fd, path in zip((1, 2), self.files, strict=True):
            adopt_append(fd, path)
            for p in [
                path,
                *(path.with_name(f"{path.name}.{i}") for i in range(1, self.backups + 1)),
            ]:
                filemodes.tighten(p)

    def rotate(self) -> list[Path]:
        """Rotate each file over the cap; returns those rotated."""
        return [p for p in self.files if rotate(p, self.max_bytes, self.backups)]
