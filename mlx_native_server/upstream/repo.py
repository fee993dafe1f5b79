"""`./setup-mlx-lm-repo.sh`: install mlx-lm from source with the patches in
patches/series, try the series against another version, say what is
installed, or go back to the pinned release wheel.

Install and --check live in mlx_lm_build.py; this module parses flags into
a frozen Settings and answers --status and --reset.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from . import install as venvs
from . import patch_queue
from ..core.errors import UserError, reported
from .git import git, head, is_dirty
from .build import BUILT_TAG, BuildSettings, check, install
from .source import SourceSpec, sdist_cache
from ..core.paths import Paths

DESCRIPTION = """\
Install mlx-lm from source into the venv instead of the pinned wheel, with
the patches in patches/series applied in order (three-way merge), all or
nothing: if a patch fails, the current install is left as it was. The source
goes to mlx-lm-repo/ (a git repository: tag 'upstream', one commit per patch).
Downloaded sdists are cached in $MLX_NATIVE_SERVER_SDIST_CACHE
(default ~/.cache/mlx-native-server/sdists). See MLX_LM_MANAGEMENT.md."""

EPILOG = """\
examples:
  ./setup-mlx-lm-repo.sh                       the pinned version, patched
  ./setup-mlx-lm-repo.sh --version 0.33.0      another release from PyPI
  ./setup-mlx-lm-repo.sh --git https://github.com/ml-explore/mlx-lm --ref main
  ./setup-mlx-lm-repo.sh --check 0.33.0        would the patches apply? (installs nothing)
  ./setup-mlx-lm-repo.sh --status              what is installed
  ./setup-mlx-lm-repo.sh --reset               back to the pinned wheel"""


@dataclass(frozen=True)
class Settings:
    action: str  # install | check | status | reset
    build: BuildSettings
    pyproject: Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="./setup-mlx-lm-repo.sh", description=DESCRIPTION,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = p.add_mutually_exclusive_group()
    action.add_argument("--check", nargs="?", const="", metavar="VERSION",
                        help="apply the series to VERSION (or to --git URL --ref REF) in a "
                             "scratch tree and report each patch; installs nothing")
    action.add_argument("--status", action="store_true",
                        help="say which mlx-lm is installed, from where, with which patches")
    action.add_argument("--reset", action="store_true",
                        help="reinstall the release wheel pinned in pyproject.toml")
    src = p.add_argument_group("source (default: the PyPI sdist of the pinned version)")
    src.add_argument("--version", help="an mlx-lm release on PyPI, e.g. 0.32.2")
    src.add_argument("--git", metavar="URL", help="a git repository, e.g. "
                     "https://github.com/ml-explore/mlx-lm (or a local path)")
    src.add_argument("--ref", help="branch, tag or commit with --git (default: main)")
    p.add_argument("--patches", type=Path, metavar="DIR",
                   help="the patch queue directory (default: patches/ of this project)")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="with --check: stop at the first failing patch and leave the tree "
                        "in DIR for resolving it")
    p.add_argument("--force", action="store_true",
                   help="replace mlx-lm-repo/ even if it has changes that are not in patches/")
    return p


def _source(args: argparse.Namespace, pin: str) -> SourceSpec:
    version = args.version
    if args.check:
        if version and version != args.check:
            raise UserError(f"--check {args.check} and --version {version} disagree; give one.")
        version = args.check
    if args.git and version:
        raise UserError("give either a PyPI version or --git URL, not both.")
    if args.ref and not args.git:
        raise UserError("--ref goes with --git URL; for a PyPI release use --version.")
    if args.git:
        return SourceSpec(url=args.git, ref=args.ref or "main")
    if args.check is not None and not version:
        raise UserError("--check needs the version to try, e.g. --check 0.33.0 "
                        "(or --check --git URL --ref REF).")
    return SourceSpec(version=version or pin)


def settings_from(argv: list[str], paths: Paths | None = None) -> Settings:
    args = parser().parse_args(argv)
    paths = paths or Paths.from_env()
    if args.keep and args.check is None:
        raise UserError("--keep goes with --check.")
    action = ("check" if args.check is not None else "status" if args.status
              else "reset" if args.reset else "install")
    if action in ("status", "reset") and (args.version or args.git or args.ref):
        raise UserError(f"--{action} takes no source; drop --version/--git/--ref.")
    pyproject = paths.project_dir / "pyproject.toml"
    pin = venvs.pinned_version(pyproject) if action in ("install", "check") else ""
    source = _source(args, pin) if action in ("install", "check") else SourceSpec()
    build = BuildSettings(
        source=source, patches_dir=(args.patches or paths.patches_dir).resolve(),
        repo_dir=paths.mlx_lm_repo, venv=paths.venv, cache=sdist_cache(),
        force=args.force, keep=args.keep.resolve() if args.keep else None)
    return Settings(action, build, pyproject)


def _repo_state(repo: Path, record: dict) -> str:
    if not (repo / ".git").exists():
        return f"{repo} is missing"
    sha = head(repo)
    notes = []
    if sha != record.get("commit"):
        built = git(repo, "rev-parse", "-q", "--verify", f"refs/tags/{BUILT_TAG}", check=False)
        notes.append("has commits after the install" if built.stdout.strip() == record.get(
            "commit") else "holds another build")
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
    from_source = record is not None and record.get("version") == found.version
    print(f"mlx-lm {found.version} in {venv}")
    if from_source:
        print(f"  source:   {record['source']}")
        patches = record.get("patches") or []
        names = ", ".join(f"{p['name']} ({p['status']})" for p in patches) or "none"
        print(f"  patches:  {names}")
        print(f"  tree:     {_repo_state(Path(record['repo']), record)}")
        current = [(p.name, p.sha256) for p in patch_queue.read_series(settings.build.patches_dir)]
        if current != [(p["name"], p["sha256"]) for p in patches]:
            print("  note:     patches/ changed since this install; run ./setup-mlx-lm-repo.sh "
                  "to rebuild")
    else:
        where = "the package index (PyPI)" if found.from_index else found.direct_url
        print(f"  source:   release wheel from {where}")
        print("  patches:  none")
    same = found.version.split("+")[0] == pin
    print(f"  pin:      mlx-lm=={pin} in pyproject.toml" + ("" if same else
          f" (the installed {found.version} differs; tests and engine.py expect the pin)"))
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


@reported
def main(argv: list[str] | None = None) -> int:
    settings = settings_from(list(argv or []))
    if settings.action == "status":
        return status(settings)
    if settings.action == "reset":
        return reset(settings)
    if settings.action == "check":
        return check(settings.build)
    return install(settings.build)
