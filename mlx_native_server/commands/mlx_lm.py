"""`./setup-mlx-lm-repo.sh`: flags -> upstream.repo.Settings, then install
mlx-lm from source with the patch queue, --check a version, --status or
--reset (upstream/ does the work; see MLX_LM_MANAGEMENT.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import UserError, reported
from ..core.paths import Paths
from ..upstream import install as venvs
from ..upstream import repo
from ..upstream.build import BuildSettings
from ..upstream.source import SourceSpec, sdist_cache

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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="./setup-mlx-lm-repo.sh",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = p.add_mutually_exclusive_group()
    action.add_argument(
        "--check",
        nargs="?",
        const="",
        metavar="VERSION",
        help="apply the series to VERSION (or to --git URL --ref REF) in a "
        "scratch tree and report each patch; installs nothing",
    )
    action.add_argument(
        "--status",
        action="store_true",
        help="say which mlx-lm is installed, from where, with which patches",
    )
    action.add_argument(
        "--reset", action="store_true", help="reinstall the release wheel pinned in pyproject.toml"
    )
    src = p.add_argument_group("source (default: the PyPI sdist of the pinned version)")
    src.add_argument("--version", help="an mlx-lm release on PyPI, e.g. 0.32.2")
    src.add_argument(
        "--git",
        metavar="URL",
        help="a git repository, e.g. https://github.com/ml-explore/mlx-lm (or a local path)",
    )
    src.add_argument("--ref", help="branch, tag or commit with --git (default: main)")
    p.add_argument(
        "--patches",
        type=Path,
        metavar="DIR",
        help="the patch queue directory (default: patches/ of this project)",
    )
    p.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="with --check: stop at the first failing patch and leave the tree "
        "in DIR for resolving it",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace mlx-lm-repo/ even if it has changes that are not in patches/",
    )
    return p


def _source(args: argparse.Namespace, pin: str) -> SourceSpec:
    """The source to build or check: --git, --version/--check, else the pin."""
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
        raise UserError(
            "--check needs the version to try, e.g. --check 0.33.0 "
            "(or --check --git URL --ref REF)."
        )
    return SourceSpec(version=version or pin)


def settings_from(argv: list[str], paths: Paths | None = None) -> repo.Settings:
    """The command line as upstream.repo.Settings; UserError for flags that
    do not go together."""
    args = parser().parse_args(argv)
    paths = paths or Paths.from_env()
    if args.keep and args.check is None:
        raise UserError("--keep goes with --check.")
    action = (
        "check"
        if args.check is not None
        else "status"
        if args.status
        else "reset"
        if args.reset
        else "install"
    )
    if action in ("status", "reset") and (args.version or args.git or args.ref):
        raise UserError(f"--{action} takes no source; drop --version/--git/--ref.")
    pyproject = paths.project_dir / "pyproject.toml"
    pin = venvs.pinned_version(pyproject) if action in ("install", "check") else ""
    source = _source(args, pin) if action in ("install", "check") else SourceSpec()
    build = BuildSettings(
        source=source,
        patches_dir=(args.patches or paths.patches_dir).resolve(),
        repo_dir=paths.mlx_lm_repo,
        venv=paths.venv,
        cache=sdist_cache(),
        force=args.force,
        keep=args.keep.resolve() if args.keep else None,
    )
    return repo.Settings(action, build, pyproject)


@reported
def main(argv: list[str]) -> int:
    return repo.run(settings_from(argv))
