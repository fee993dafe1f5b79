"""Put a local model directory's files into another directory: hard links
where both sit on one filesystem (instant, no extra space), else a copy that
reports the bytes copied so far."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .source import human_bytes

CHUNK = 16 * 2**20  # bytes read per copy step
REPORT_EVERY = 10  # percent of the total between two progress lines


def same_filesystem(a: Path, b: Path) -> bool:
    """Whether a and b (or their nearest existing parents) share a device."""

    def dev(p: Path) -> int:
        while not p.exists():
            p = p.parent
        return p.stat().st_dev

    return dev(a) == dev(b)


class Progress:
    """'copied 3.1 GB of 61.0 GB (5%)' lines, one per REPORT_EVERY percent."""

    def __init__(self, total: int, say: Callable[[str], None]):
        self.total, self.done, self.shown, self.say = total, 0, 0, say

    def add(self, n: int) -> None:
        self.done += n
        percent = self.done * 100 // max(self.total, 1)
        finished = self.done == self.total and percent > self.shown
        if percent >= self.shown + REPORT_EVERY or finished:
            self.shown = percent
            self.say(f"  copied {human_bytes(self.done)} of {human_bytes(self.total)} ({percent}%)")


def _copy(src: Path, dest: Path, progress: Progress) -> None:
    with src.open("rb") as fin, dest.open("wb") as fout:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            progress.add(len(chunk))
    shutil.copystat(src, dest)


def link_or_copy(files: list[Path], dest: Path, say: Callable[[str], None] = print) -> str:
    """Put each file (by its name) into `dest`, which must exist; return
    'linked' or 'copied' for the message. Symlinks (the Hugging Face cache's)
    are followed: dest holds the files themselves."""
    sources = [f.resolve() for f in files]
    try:
        for src, file in zip(sources, files, strict=True):
            os.link(src, dest / file.name)
        return "linked"
    except OSError:  # another filesystem, or one without hard links
        for file in files:
            (dest / file.name).unlink(missing_ok=True)
    progress = Progress(sum(s.stat().st_size for s in sources), say)
    for src, file in zip(sources, files, strict=True):
        _copy(src, dest / file.name, progress)
    return "copied"
