"""The patch queue: `patches/series` names the patches in order; each patch
is a unified diff (plain `git diff` or `git format-patch` output) under a
header that says why it exists and where it stands upstream.

Patches are applied in a git repository with `git apply`, falling back to a
three-way merge, and committed one by one, so the tree's history reads
upstream + one commit per patch. Nothing here touches the venv.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from .git import git

REQUIRED = ("subject", "why", "upstream")
_DIFF_START = re.compile(r"^(diff --git |--- |Index: |---$)")
_FIELD = re.compile(r"^([A-Za-z][A-Za-z-]*):[ \t]*(.*)$")


@dataclass(frozen=True)
class Patch:
    """One entry of the series, with its header fields."""

    name: str
    path: Path
    subject: str
    why: str
    upstream: str
    base: str  # the mlx-lm version it was made against ("" if not said)
    sha256: str

    def commit_message(self, version: str) -> str:
        """What the patch's commit says; `git format-patch` turns it back
        into a patch whose header has Base set to the tree's version."""
        return (
            f"{self.subject}\n\nWhy: {self.why}\nUpstream: {self.upstream}\n"
            f"Base: mlx-lm {version}\n"
        )


def parse_header(text: str) -> dict[str, str]:
    """'Key: value' lines before the diff (indented lines continue a value);
    keys lower-cased. A format-patch 'Subject: [PATCH n/m] x' gives 'x'."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if _DIFF_START.match(line):
            break
        m = _FIELD.match(line)
        if m and m.group(1).lower() not in fields:
            key = m.group(1).lower()
            fields[key] = m.group(2).strip()
        elif key and line[:1] in (" ", "\t") and line.strip():
            fields[key] = f"{fields[key]} {line.strip()}".strip()
        else:
            key = None
    if "subject" in fields:
        fields["subject"] = re.sub(r"^\[PATCH[^\]]*\]\s*", "", fields["subject"])
    if "base" in fields:
        fields["base"] = re.sub(r"^mlx[-_]lm\s+", "", fields["base"], flags=re.I)
    return fields


def read_patch(path: Path, name: str) -> Patch:
    try:
        data = path.read_bytes()
    except OSError:
        raise UserError(
            f"the series names '{name}', which is not in {path.parent}; "
            f"add the file or remove the line from {path.parent / 'series'}."
        ) from None
    text = data.decode("utf-8", errors="replace")
    if not re.search(r"^(diff --git |--- )", text, re.M):
        raise UserError(
            f"{path} holds no diff; make it with 'git format-patch' or 'git diff' "
            "(see MLX_LM_MANAGEMENT.md)."
        )
    fields = parse_header(text)
    for key in REQUIRED:
        if not fields.get(key):
            raise UserError(
                f"{path} has no '{key.capitalize()}:' line; every patch says what it "
                "does, why it exists and its upstream status (see patches/README.md)."
            )
    return Patch(
        name,
        path,
        fields["subject"],
        fields["why"],
        fields["upstream"],
        fields.get("base", ""),
        hashlib.sha256(data).hexdigest(),
    )


def read_series(patches_dir: Path) -> list[Patch]:
    """The patches named by `patches_dir/series`, in order ('#' comments and
    blank lines skipped). No series file means no patches."""
    series = patches_dir / "series"
    if not series.is_file():
        return []
    names = []
    for line in series.read_text("utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"{series} names {', '.join(dupes)} more than once; keep one line each.")
    return [read_patch(patches_dir / n, n) for n in names]


@dataclass(frozen=True)
class Applied:
    """What happened to one patch: clean (applied as is), merged (needed the
    three-way merge), conflict (three-way merge left markers) or failed."""

    patch: Patch
    status: str
    files: tuple[str, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("clean", "merged")

    def describe(self) -> str:
        if self.status == "clean":
            return "applies cleanly"
        if self.status == "merged":
            return "applies with a three-way merge"
        where = ", ".join(self.files) or "unknown file"
        if self.status == "conflict":
            return f"conflicts in {where}"
        return f"does not apply to {where}" + (f" ({self.detail})" if self.detail else "")


_FILE_PATTERNS = (
    re.compile(r"^Applied patch to '(.+)' with conflicts\.$"),
    re.compile(r"^U (.+)$"),
    re.compile(r"^error: patch failed: (.+):\d+$"),
    re.compile(
        r"^error: (.+): (?:patch does not apply|does not exist in index|"
        r"already exists in index|No such file or directory|"
        r"already exists in working directory)$"
    ),
)


def failed_files(output: str) -> tuple[str, ...]:
    """The files git apply names as not applying or conflicting, in order."""
    found: list[str] = []
    for line in output.splitlines():
        for pattern in _FILE_PATTERNS:
            m = pattern.match(line.strip())
            if m and m.group(1) not in found:
                found.append(m.group(1))
    return tuple(found)


def _reason(output: str) -> str:
    for line in output.splitlines():
        if "does not exist in index" in line or "No such file" in line:
            return "the file is not in this version"
        if "already exists" in line:
            return "the file already exists"
    return ""


def apply(repo: Path, patch: Patch, version: str) -> Applied:
    """Apply one patch to the clean tree at `repo` and commit it. On failure
    the tree keeps what git left (conflict markers); see `discard`."""
    path = str(patch.path.resolve())
    if git(repo, "apply", "--index", "--check", path, check=False).ok:
        git(repo, "apply", "--index", path, what=f"applying {patch.name}")
        status = "clean"
    else:
        r = git(repo, "apply", "--3way", path, check=False)
        output = f"{r.stdout}\n{r.stderr}"
        if not r.ok:
            status = "conflict" if "with conflicts" in output else "failed"
            return Applied(patch, status, failed_files(output), _reason(output))
        status = "merged"
    git(
        repo,
        "commit",
        "-q",
        "--no-verify",
        "-m",
        patch.commit_message(version),
        what=f"committing {patch.name}",
    )
    return Applied(patch, status)


def discard(repo: Path) -> None:
    """Throw away what a failed patch left, back to the last commit."""
    git(repo, "reset", "-q", "--hard", what="git reset")
    git(repo, "clean", "-q", "-fd", what="git clean")


def apply_series(
    repo: Path, patches: list[Patch], version: str, *, keep_going: bool
) -> list[Applied]:
    """Apply `patches` in order. Stops at the first failure (leaving it in
    the tree) unless `keep_going`, which discards it and tries the rest."""
    results = []
    for patch in patches:
        result = apply(repo, patch, version)
        results.append(result)
        if not result.ok:
            if not keep_going:
                break
            discard(repo)
    return results


def bases_to_seed(patches: list[Patch], version: str) -> list[str]:
    """Versions other than `version` that patches were made against: a
    three-way merge needs their files (the patches' preimages)."""
    seen: list[str] = []
    for p in patches:
        if p.base and p.base != version and p.base not in seen:
            seen.append(p.base)
    return seen


def seed_from(repo: Path, other: Path) -> None:
    """Copy the objects of `other`'s history into `repo`, so git apply
    --3way finds the blobs the patches were made from."""
    git(repo, "fetch", "-q", "--no-tags", str(other), "HEAD", what="copying base objects")
