"""Where mlx-lm's source comes from: a PyPI sdist (cached) or a git ref.

`checkout(spec, dest)` leaves a git repository at `dest` whose first commit,
tagged `upstream`, is the pristine source, so patches can be applied with a
three-way merge and regenerated with `git format-patch upstream..`.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core import proc
from ..core.errors import UserError
from .git import git, head, init_tree

UPSTREAM_TAG = "upstream"
CACHE_ENV = "MLX_NATIVE_SERVER_SDIST_CACHE"
_VERSION_RE = re.compile(r"^\d+(\.\d+)*([a-z]+\d*)?$")


@dataclass(frozen=True)
class SourceSpec:
    """A PyPI version (`version`) or a git repository and ref (`url`, `ref`)."""

    version: str = ""
    url: str = ""
    ref: str = ""

    @property
    def is_git(self) -> bool:
        return bool(self.url)

    def describe(self) -> str:
        if self.is_git:
            return f"git {self.url} at {self.ref}"
        return f"PyPI sdist mlx-lm=={self.version}"


@dataclass(frozen=True)
class Tree:
    """A checked-out source tree: its upstream version and first commit."""

    path: Path
    version: str
    upstream_sha: str
    spec: SourceSpec


def is_release(version: str) -> bool:
    """A plain release number such as 0.32.2 (what PyPI has sdists of)."""
    return bool(_VERSION_RE.match(version))


def sdist_cache(environ: Mapping[str, str] | None = None) -> Path:
    """Downloaded sdists live here, so a re-run (or CI with this directory
    cached) does not download them again."""
    environ = os.environ if environ is None else environ
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    base = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mlx-native-server" / "sdists"


def fetch_sdist(version: str, cache: Path) -> Path:
    """The sdist of mlx-lm `version`, downloaded by pip into `cache` once."""
    if not is_release(version):
        raise UserError(
            f"'{version}' is not an mlx-lm release number such as 0.32.2; "
            "for a branch or commit use --git URL --ref REF."
        )
    tarball = cache / f"mlx_lm-{version}.tar.gz"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    print(f"downloading the mlx-lm {version} sdist from PyPI into {cache}...", flush=True)
    proc.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            f"mlx-lm=={version}",
            "-d",
            str(cache),
        ],
        what=f"downloading the mlx-lm {version} sdist",
        hint=f"check the version exists on https://pypi.org/project/mlx-lm/ and the "
        f"network reaches PyPI, or put mlx_lm-{version}.tar.gz in {cache}",
    )
    if not tarball.is_file():
        raise UserError(
            f"pip did not leave mlx_lm-{version}.tar.gz in {cache}; "
            "download it by hand from https://pypi.org/project/mlx-lm/#files."
        )
    return tarball


def _extract(tarball: Path, dest: Path) -> None:
    """Unpack the sdist's top directory (mlx_lm-X/) into dest."""
    with tarfile.open(tarball) as tf:
        members = []
        for m in tf.getmembers():
            parts = Path(m.name).parts
            if len(parts) < 2 or ".." in parts or not (m.isfile() or m.isdir()):
                continue
            m.name = str(Path(*parts[1:]))
            members.append(m)
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+: refuse links out of dest
            tf.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - older Pythons; the members were checked above
            tf.extractall(dest, members=members)


def _checkout_sdist(spec: SourceSpec, dest: Path, cache: Path) -> Tree:
    tarball = fetch_sdist(spec.version, cache)
    dest.mkdir(parents=True)
    _extract(tarball, dest)
    sha = init_tree(dest, f"mlx-lm {spec.version} (pristine PyPI sdist)")
    git(dest, "tag", UPSTREAM_TAG, what="git tag")
    return Tree(dest, spec.version, sha, spec)


def version_from_describe(described: str, sha: str) -> str:
    """`git describe --tags` output -> a PEP 440 version, as setuptools-scm
    would say it: v0.32.2 -> 0.32.2; v0.32.2-5-gabc -> 0.32.3.dev5+gabc."""
    m = re.match(r"^v?(\d+(?:\.\d+)*)(?:-(\d+)-g([0-9a-f]+))?$", described.strip())
    if not m:
        return f"0.0.0+g{sha[:9]}"
    base, distance, short = m.groups()
    if not distance:
        return base
    parts = base.split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return f"{'.'.join(parts)}.dev{distance}+g{short}"


def _checkout_git(spec: SourceSpec, dest: Path) -> Tree:
    dest.mkdir(parents=True)
    git(dest, "init", "-q", "-b", "patched", what="git init")
    print(f"fetching {spec.ref} from {spec.url}...", flush=True)
    # Tags come along so the version can be told (git describe).
    r = git(
        dest, "fetch", "--quiet", "--tags", "--filter=blob:none", spec.url, spec.ref, check=False
    )
    if not r.ok:
        fatal = [ln for ln in r.stderr.splitlines() if ln.startswith("fatal:")]
        reason = fatal[0][len("fatal:") :].strip() if fatal else f"exit status {r.returncode}"
        raise UserError(
            f"fetching {spec.ref} from {spec.url} failed ({reason}); check the URL, "
            "the ref and the network, or install a PyPI release with --version."
        )
    git(dest, "checkout", "-q", "-B", "patched", "FETCH_HEAD", what="git checkout")
    git(dest, "tag", "-f", UPSTREAM_TAG, what="git tag")
    sha = head(dest)
    described = git(dest, "describe", "--tags", "--match", "v[0-9]*", check=False).stdout
    return Tree(dest, version_from_describe(described, sha), sha, spec)


def checkout(spec: SourceSpec, dest: Path, cache: Path | None = None) -> Tree:
    """Put the pristine source of `spec` at `dest` (which must not exist) as
    a git repository with the `upstream` tag on its first commit."""
    if spec.is_git:
        return _checkout_git(spec, dest)
    return _checkout_sdist(spec, dest, cache or sdist_cache())
