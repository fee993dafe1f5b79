"""The mlx-lm install as a whole (`./setup-mlx-lm-repo.sh`; its flags:
commands/mlx_lm.py): install from source with the patches in patches/series,
try the series against another version, say what is installed, or go back to
the pinned release wheel.

Install and --check live in upstream/build.py; this module answers --status
and --reset, and `run` picks the action.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import install as venvs
from . import patch_queue
from .build import BUILT_TAG, BuildSettings, check, install
from .git import git, head, is_dirty


@dataclass(frozen=True)
class Settings:
    """One run of ./setup-mlx-lm-repo.sh (commands/mlx_lm.py makes it from the flags)."""

    action: str  # install | check | status | reset
    build: BuildSettings
    pyproject: Path


def _repo_state(repo: Path, record: dict) -> str:
    if not (repo / ".git").exists():
        return f"{repo} is missing"
    sha = head(repo)
    notes = []
    if sha != record.get("commit"):
        built = git(repo, "rev-parse", "-q", "--verify", f"refs/tags/{BUILT_TAG}", check=False)
        notes.append(
            "has commits after the install"
            if built.stdout.strip() == record.get("commit")
            else "holds another build"
        )
    if is_dirty(repo):
        notes.append("has uncommitted changes")
    return f"{repo} at {sha[:9]}" + (f" ({', '.join(notes)})" if notes else "")


def status(settings: Settings) -> int:
    venv = settings.build.venv
    python = venvs.venv_python(venv)
    found = venvs.installed(python)
    pin = venvs.pinned_version(settings.pyproject)
    if found is None:
        print(f"mlx-lm is not installed in {venv}; run ./setup-mlx-lm-repo.sh --reset.")
        return 1
    record = venvs.read_record(venv)
    print(f"mlx-lm {found.version} in {venv}")
    if record is not None and record.get("version") == found.version:  # built from source
        print(f"  source:   {record['source']}")
        patches = record.get("patches") or []
        names = ", ".join(f"{p['name']} ({p['status']})" for p in patches) or "none"
        print(f"  patches:  {names}")
        print(f"  tree:     {_repo_state(Path(record['repo']), record)}")
        current = [(p.name, p.sha256) for p in patch_queue.read_series(settings.build.patches_dir)]
        if current != [(p["name"], p["sha256"]) for p in patches]:
            print(
                "  note:     patches/ changed since this install; run ./setup-mlx-lm-repo.sh "
                "to rebuild"
            )
    else:
        where = "the package index (PyPI)" if found.from_index else found.direct_url
        print(f"  source:   release wheel from {where}")
        print("  patches:  none")
    same = found.version.split("+")[0] == pin
    print(
        f"  pin:      mlx-lm=={pin} in pyproject.toml"
        + (
            ""
            if same
            else f" (the installed {found.version} differs; tests and the adapter expect the pin)"
        )
    )
    return 0


def reset(settings: Settings) -> int:
    venv = settings.build.venv
    python = venvs.venv_python(venv)
    pin = venvs.pinned_version(settings.pyproject)
    found = venvs.installed(python)
    record = venvs.read_record(venv)
    if found and found.from_index and found.version == pin and record is None:
        print(f"mlx-lm {pin}, the pinned release wheel, is already installed.")
        return 0
    venvs.install_pinned(pin, python)
    venvs.forget_record(venv)
    repo = settings.build.repo_dir
    kept = ""
    if repo.exists():
        kept = f"; {repo} is left as it was (delete it if you no longer need it)"
    print(f"mlx-lm {pin}, the release wheel pinned in pyproject.toml, is installed again{kept}.")
    return 0


def run(settings: Settings) -> int:
    """Do settings.action; the exit code."""
    if settings.action == "status":
        return status(settings)
    if settings.action == "reset":
        return reset(settings)
    if settings.action == "check":
        return check(settings.build)
    return install(settings.build)
