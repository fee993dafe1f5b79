"""git, run one way: through proc.run, with a fixed identity and no signing,
so the mlx-lm source tree can be committed to on a machine without a git
config (CI, a fresh Mac)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core import proc

IDENTITY = {
    "GIT_AUTHOR_NAME": "mlx-native-server",
    "GIT_AUTHOR_EMAIL": "mlx-native-server@localhost",
    "GIT_COMMITTER_NAME": "mlx-native-server",
    "GIT_COMMITTER_EMAIL": "mlx-native-server@localhost",
}
HINT = "install git (macOS: 'xcode-select --install', Debian: 'apt-get install git') and run again"


def git(
    repo: Path, *args: str, check: bool = True, what: str | None = None, hint: str = ""
) -> proc.Result:
    """`git -C repo ARGS`; with check, a failure is a UserError naming `what`."""
    argv = [
        "git",
        "-C",
        str(repo),
        "-c",
        "commit.gpgsign=false",
        "-c",
        "tag.gpgsign=false",
        "-c",
        "core.autocrlf=false",
        "-c",
        "advice.detachedHead=false",
        *args,
    ]
    return proc.run(argv, check=check, what=what, hint=hint or HINT, env={**os.environ, **IDENTITY})


def init_tree(path: Path, message: str) -> str:
    """Make `path` a git repository whose first commit holds everything in
    it; return that commit's sha."""
    git(path, "init", "-q", "-b", "patched", what="git init")
    git(path, "add", "-A", "-f", what="git add")
    git(path, "commit", "-q", "--no-verify", "-m", message, what="git commit")
    return head(path)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD", what="git rev-parse").stdout.strip()


def is_dirty(repo: Path) -> bool:
    """Uncommitted changes, untracked files included."""
    return bool(git(repo, "status", "--porcelain", what="git status").stdout.strip())
