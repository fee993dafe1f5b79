"""Logs a person can read: the terminal and logs/app.log (size-rotated)."""

from __future__ import annotations

import logging
import logging.handlers
import sys

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
    settings.paths.log_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        settings.paths.app_log, maxBytes=settings.log_max_bytes,
        backupCount=settings.log_backups, encoding="utf-8",
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


_UPSTREAM_CHATTER = ("Prompt Cache:", "- ", "Prompt processing progress")


def _quiet_upstream(record: logging.LogRecord) -> bool:
    """mlx-lm logs cache statistics at INFO on every request; we log our own
    one line per request instead, so keep upstream's for DEBUG."""
    if record.name == "root" and record.levelno == logging.INFO:
        return not str(record.msg).startswith(_UPSTREAM_CHATTER)
    return True
