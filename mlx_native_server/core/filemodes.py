"""Owner-only files and directories, whatever the umask.

The prompt cache holds KV states and token ids that decode back to the
user's prompts, the logs hold request summaries, and a service file may
hold the API key: none of it is for the other users of the machine. The
mode given to open() and mkdir() only loses bits to the umask, so every
mode here is also set explicitly (fchmod, chmod), and a file is private
before its first byte is written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
OTHERS = 0o077  # group and world bits


def is_private(path: Path) -> bool:
    """True if neither the group nor other users have any access to `path`."""
    return not stat.S_IMODE(os.stat(path).st_mode) & OTHERS


def tighten(path: Path, mode: int = PRIVATE_FILE) -> bool:
    """Set `path` to `mode` if others have access; False if it cannot be
    changed (gone, someone else's, a filesystem without modes). Best effort:
    an existing file stays usable either way."""
    try:
        if stat.S_IMODE(os.stat(path).st_mode) & OTHERS:
            os.chmod(path, mode)
        return True
    except OSError:
        return False


def private_dir(path: Path, *, tighten_existing: bool) -> bool:
    """Make the directory `path` (and missing parents): 0700 when this call
    creates it, and when it already exists if `tighten_existing`. Returns
    whether it is owner-only now; mkdir's OSError propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:
        if not path.is_dir():
            raise
        if tighten_existing:
            tighten(path, PRIVATE_DIR)
    else:
        os.chmod(path, PRIVATE_DIR)
    return is_private(path)


def open_private(path: Path, *, append: bool = False) -> int:
    """A write-only fd on `path`, mode 0600. New files only (O_EXCL), unless
    `append`: then an existing file is opened for appending and tightened."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_EXCL)
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except OSError:
        # An existing log we may write but not chmod (another owner, a
        # filesystem without modes) is still written rather than stopping us.
        if not append:
            os.close(fd)
            raise
    return fd


def write_atomic(path: Path, content: bytes, mode: int = PRIVATE_FILE) -> None:
    """Replace `path` with `content`: a temporary file beside it, set to
    `mode` before anything is written, fsynced, renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = open_private(tmp)
    try:
        os.fchmod(fd, mode)
        with open(fd, "wb", closefd=False) as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    tmp.replace(path)
