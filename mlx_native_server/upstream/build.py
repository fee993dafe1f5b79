"""Install mlx-lm from source with the patch queue applied, all or nothing,
or try the queue against another version.

Everything is built in a scratch directory: the pristine source, the
patches (each a commit), the wheel, an import of the wheel. Only when all
of that worked does the venv get the wheel and mlx-lm-repo/ the tree, so a
patch that fails leaves the current install and tree as they were.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from . import install as venvs
from . import patch_queue
from .git import git, head, is_dirty
from .patch_queue import Applied, Patch
from .source import SourceSpec, Tree, checkout, is_release
from .wheel import build_wheel

BUILT_TAG = "built"  # on the commit this script built, so later commits are the user's


@dataclass(frozen=True)
class BuildSettings:
    """What `install` and `check` work on, resolved by the CLI."""

    source: SourceSpec
    patches_dir: Path
    repo_dir: Path
    venv: Path
    cache: Path
    force: bool = False
    keep: Path | None = None


def prepare(spec: SourceSpec, dest: Path, patches: list[Patch], cache: Path) -> Tree:
    """The pristine tree of `spec` at `dest`, holding also the files the
    patches were made from (their Base versions), for three-way merges."""
    tree = checkout(spec, dest, cache)
    for base in patch_queue.bases_to_seed(patches, tree.version):
        if not is_release(base):
            continue
        with tempfile.TemporaryDirectory(prefix="mlx-lm-base-") as tmp:
            try:
                other = checkout(SourceSpec(version=base), Path(tmp) / "tree", cache)
                patch_queue.apply_series(other.path, patches, other.version, keep_going=True)
                patch_queue.seed_from(tree.path, other.path)
            except UserError as e:
                print(
                    f"note: without mlx-lm {base} at hand, patches made against it apply "
                    f"without a three-way merge ({e})",
                    flush=True,
                )
    return tree


def print_results(results: list[Applied]) -> None:
    width = max((len(r.patch.name) for r in results), default=0)
    for r in results:
        print(f"  {r.patch.name:<{width}}  {r.describe()}", flush=True)


def _guard_repo(settings: BuildSettings, new_tree: Path) -> None:
    """Refuse to replace mlx-lm-repo/ when that would lose work: uncommitted
    changes, or commits whose result the new tree does not hold."""
    repo = settings.repo_dir
    if settings.force or not repo.exists():
        return
    if not (repo / ".git").exists():
        raise UserError(
            f"{repo} exists but is not a tree this script built; move it away "
            "or pass --force to replace it."
        )
    if is_dirty(repo):
        raise UserError(
            f"{repo} has uncommitted changes; turn them into a patch in patches/ "
            "(see MLX_LM_MANAGEMENT.md) or pass --force to discard them."
        )
    old_head = head(repo)
    built = git(repo, "rev-parse", "-q", "--verify", f"refs/tags/{BUILT_TAG}", check=False)
    same_files = (
        git(repo, "rev-parse", "HEAD^{tree}", check=False).stdout.strip()
        == git(new_tree, "rev-parse", "HEAD^{tree}").stdout.strip()
    )
    if old_head != built.stdout.strip() and not same_files:
        raise UserError(
            f"{repo} has commits that are not in patches/ (HEAD {old_head[:9]}); "
            "export them with 'git format-patch' into patches/ and the series "
            "(see MLX_LM_MANAGEMENT.md), or pass --force to discard them."
        )


def _replace_repo(new_tree: Path, repo: Path) -> None:
    repo.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if repo.exists():
        old = Path(tempfile.mkdtemp(prefix="mlx-lm-repo-old-"))
        shutil.move(str(repo), str(old / "tree"))
    shutil.move(str(new_tree), str(repo))
    if old:
        shutil.rmtree(old, ignore_errors=True)


def install(settings: BuildSettings) -> int:
    """Build, check and install; raise UserError, changing nothing, if a
    patch does not apply or the result does not import."""
    patches = patch_queue.read_series(settings.patches_dir)
    python = venvs.venv_python(settings.venv)
    with tempfile.TemporaryDirectory(prefix="mlx-lm-build-") as tmp:
        work = Path(tmp)
        tree = prepare(settings.source, work / "tree", patches, settings.cache)
        print(
            f"applying {len(patches)} patch(es) from {settings.patches_dir / 'series'} "
            f"to mlx-lm {tree.version}:",
            flush=True,
        )
        results = patch_queue.apply_series(tree.path, patches, tree.version, keep_going=False)
        print_results(results)
        bad = next((r for r in results if not r.ok), None)
        if bad:
            raise UserError(
                f"patch {bad.patch.name} {bad.describe()} of mlx-lm {tree.version}, so nothing "
                f"was installed and the current mlx-lm is unchanged; rebase the patch "
                f"(MLX_LM_MANAGEMENT.md) or see every patch with "
                f"'./setup-mlx-lm-repo.sh --check {_source_args(settings.source)}'."
            )
        _guard_repo(settings, tree.path)
        git(tree.path, "tag", "-f", BUILT_TAG, what="git tag")
        sha = head(tree.path)
        version = venvs.build_version(tree.version, len(patches), sha)
        wheel = build_wheel(tree.path, version, work, settings.cache)
        imported = venvs.check_import(wheel, work, python)
        venvs.install_wheel(wheel, python)
        _replace_repo(tree.path, settings.repo_dir)
    venvs.write_record(
        settings.venv,
        {
            "version": imported,
            "upstream_version": tree.version,
            "source": settings.source.describe(),
            "patches": [
                {"name": r.patch.name, "sha256": r.patch.sha256, "status": r.status}
                for r in results
            ],
            "repo": str(settings.repo_dir),
            "commit": sha,
            "upstream_commit": tree.upstream_sha,
            "installed_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        },
    )
    print(
        f"installed mlx-lm {imported} ({settings.source.describe()}, {len(patches)} patch(es)) "
        f"into {settings.venv}; the source is in {settings.repo_dir}. "
        "Restart the server to use it."
    )
    return 0


def _source_args(spec: SourceSpec) -> str:
    return f"--git {spec.url} --ref {spec.ref}" if spec.is_git else f"--version {spec.version}"


def _keep(tree: Tree, keep: Path, failed: Applied | None) -> None:
    shutil.move(str(tree.path), str(keep))
    print(f"the tree is in {keep} (branch 'patched' on tag 'upstream').")
    if failed:
        # `git commit --no-edit` takes its message from MERGE_MSG.
        (keep / ".git" / "MERGE_MSG").write_text(failed.patch.commit_message(tree.version))
        print(
            f"{failed.patch.name} stopped there: resolve the conflict markers in "
            f"{', '.join(failed.files) or 'the files git names'}, then run in {keep}: "
            "git add -A && git commit --no-edit && "
            f"git format-patch -1 --stdout > {failed.patch.path}"
        )


def check(settings: BuildSettings) -> int:
    """Apply the series to another version in a scratch tree and report each
    patch, then check the adapter's contract against the result; nothing is
    installed. With `keep`, stop at the first failure and leave the tree
    there for resolving it."""
    if settings.keep and settings.keep.exists():
        raise UserError(f"{settings.keep} already exists; give --keep a new directory.")
    patches = patch_queue.read_series(settings.patches_dir)
    with tempfile.TemporaryDirectory(prefix="mlx-lm-check-") as tmp:
        tree = prepare(settings.source, Path(tmp) / "tree", patches, settings.cache)
        print(
            f"checking {len(patches)} patch(es) from {settings.patches_dir / 'series'} "
            f"against mlx-lm {tree.version} ({settings.source.describe()}):",
            flush=True,
        )
        results = patch_queue.apply_series(
            tree.path, patches, tree.version, keep_going=settings.keep is None
        )
        print_results(results)
        failed = [r for r in results if not r.ok]
        moved = (
            []
            if failed
            else venvs.contract_problems(
                tree.path,
                venvs.venv_python(settings.venv),
                what="importing the patched mlx-lm",
                hint="a patch may break the import; nothing was installed",
            )[1]
        )
        if settings.keep:
            _keep(tree, settings.keep, failed[0] if failed else None)
    if failed and settings.keep:
        raise UserError(
            f"{failed[0].patch.name} does not apply to mlx-lm {tree.version}; "
            f"resolve it in {settings.keep} as said above, then check again."
        )
    if failed:
        raise UserError(
            f"{len(failed)} of {len(patches)} patch(es) do not apply to mlx-lm "
            f"{tree.version}; rebase them (MLX_LM_MANAGEMENT.md) before moving to it."
        )
    if moved:
        raise venvs.moved_error(tree.version, moved, "nothing was installed")
    print(
        f"all {len(patches)} patch(es) apply to mlx-lm {tree.version} and every name the "
        "adapter uses is there; install it with "
        f"./setup-mlx-lm-repo.sh {_source_args(settings.source)}"
    )
    return 0
