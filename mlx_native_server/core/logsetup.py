"""Logs a person can read: the terminal and logs/app.log (size-rotated).

app.log holds request summaries, so it and its rotated copies are 0600, and
the log directory is 0700 when this creates it (an existing one, perhaps
chosen to be shared with log_dir, keeps its mode).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

from . import filemodes
from .config import Settings

FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


def setup(settings: Settings, *, terminal: bool = True) -> None:
    """Send every log (ours and mlx-lm's) to app.log and, if asked, stderr."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(settings.log_level)
    formatter = logging.Formatter(FORMAT, DATEFMT)
    filemodes.private_dir(settings.paths.log_dir, tighten_existing=False)
    for i in range(1, settings.log_backups + 1):  # copies rotated before logs were private
        filemodes.tighten(settings.paths.app_log.with_name(f"app.log.{i}"))
    file_handler = PrivateRotatingFileHandler(
        settings.paths.app_log,
        maxBytes=settings.log_max_bytes,
        backupCount=settings.log_backups,
        encoding="utf-8",
        errors="backslashreplace",  # a client's lone surrogate must not break logging
    )
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    if terminal:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)
    if settings.log_level != "DEBUG":
        for h in root.handlers:
            h.addFilter(_quiet_upstream)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose file is 0600 from its creation on; rotation
    renames it, which keeps the mode, so every rotated copy is 0600 too."""

    def _open(self):
        fd = filemodes.open_private(self.baseFilename, append=True)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


_UPSTREAM_CHATTER = ("Prompt Cache:", "- ", "Prompt processing progress")


def _quiet_upstream(record: logging.LogRecord) -> bool:
    """mlx-lm logs cache statistics at INFO on every request; we log our own
    one line per request instead, so keep upstream's for DEBUG."""
    if record.name == "root" and record.levelno == logging.INFO:
        return not str(record.msg).startswith(_UPSTREAM_CHATTER)
    return True
