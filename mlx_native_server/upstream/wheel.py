"""Build a wheel of an mlx-lm source tree, with cached build tools.

pip's build isolation would fetch setuptools from PyPI on every build; the
tools a tree asks for ([build-system] requires) are installed once into a
directory beside the sdist cache instead, so rebuilds are quick and work
offline once the tools and the sdist are cached.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from ..core import proc
from ..core.errors import UserError
from .git import git

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# What pip assumes for a tree without [build-system] (older mlx-lm: setup.py).
LEGACY_REQUIRES = ["setuptools>=40.8.0", "wheel"]


def build_requires(tree: Path) -> list[str]:
    try:
        data = tomllib.loads((tree / "pyproject.toml").read_text("utf-8"))
    except FileNotFoundError:
        return LEGACY_REQUIRES
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(
            f"{tree / 'pyproject.toml'} cannot be read ({e}); a patch may have broken it."
        ) from None
    return list(data.get("build-system", {}).get("requires", LEGACY_REQUIRES))


def build_tools(requires: list[str], cache: Path) -> Path:
    """A directory holding `requires`, installed once per set of
    requirements and Python version."""
    key = "\n".join(sorted(requires)) + f"\n{sys.version_info[:2]}"
    target = cache / f"build-tools-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    print(f"installing the build tools ({', '.join(requires)}) into {target}...", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-tools-", dir=cache))
    try:
        proc.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                str(tmp),
                *requires,
            ],
            what="installing the build tools",
            hint="pip needs PyPI the first time; check the network and run again",
        )
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _export(tree: Path, dest: Path) -> None:
    """The committed state of `tree` (not stray working files) into dest."""
    archive = dest.with_suffix(".tar")
    git(tree, "archive", "--format=tar", "-o", str(archive), "HEAD", what="git archive")
    dest.mkdir()
    with tarfile.open(archive) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # pragma: no cover - Python before 3.10.12; git archive output is trusted
            tf.extractall(dest)


def build_wheel(tree: Path, version: str, workdir: Path, cache: Path) -> Path:
    """A wheel of the committed state of `tree`, built in `workdir`,
    reporting `version`. mlx-lm is pure Python, so the running
    interpreter's pip builds it for any venv."""
    export = workdir / "export"
    _export(tree, export)
    tools = build_tools(build_requires(export), cache)
    wheels = workdir / "wheels"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tools), os.environ.get("PYTHONPATH")])),
        # setuptools-scm (mlx-lm 0.31+) takes the version from here; older
        # releases read mlx_lm/_version.py and ignore it.
        "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_MLX_LM": version,
    }
    print(f"building mlx-lm {version}...", flush=True)
    proc.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(wheels),
            str(export),
        ],
        env=env,
        what="building the mlx-lm wheel",
        hint="the current install is unchanged; a patch may have broken the build",
    )
    found = sorted(wheels.glob("mlx_lm-*.whl"))
    if not found:
        raise UserError(f"pip built no mlx_lm wheel in {wheels}; run again with a clean tree.")
    return found[0]
