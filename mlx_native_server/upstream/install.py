"""Putting an mlx-lm build into the venv, and telling what is there.

A wheel (wheel_build.py) is imported from a scratch directory before the
venv is touched, and checked against the adapter's contract (every upstream
name and signature mlx_native_server/adapter/ relies on); then it is
installed with --no-deps so mlx and the rest stay as they are. A record in
the venv says where the installed mlx-lm came from.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..core import proc
from ..core.errors import UserError

RECORD = "mlx-native-server-mlx-lm.json"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding mlx_native_server/
ADAPTER_HINT = "the adapter in mlx_native_server/adapter/ must follow"
# Imports mlx_lm from sys.argv[1] first, then runs adapter/contract.py from
# this checkout against it; prints {"version", "problems"} as its last line.
# No .pyc files: argv[1] may be a source tree kept for the user (--keep).
_CONTRACT = """\
import json, sys
sys.dont_write_bytecode = True
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import mlx_lm, mlx_lm.server, mlx_lm.convert
from mlx_native_server.adapter import contract
print(json.dumps({"version": mlx_lm.__version__, "problems": contract.problems()}))
"""
_PROBE = """\
import importlib.metadata as md, json, sys
try:
    d = md.distribution("mlx-lm")
except md.PackageNotFoundError:
    print("null"); sys.exit(0)
print(json.dumps({"version": d.version, "location": str(d.locate_file("")),
                  "direct_url": d.read_text("direct_url.json")}))
"""


@dataclass(frozen=True)
class Installed:
    """The mlx-lm the venv imports, as its package metadata says."""

    version: str
    location: str
    direct_url: str  # pip's direct_url.json: set for installs from a file or URL

    @property
    def from_index(self) -> bool:
        return not self.direct_url


def venv_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        raise UserError(
            f"there is no virtual environment at {venv}; run ./start-server.sh --help "
            "once to create it (or set MLX_NATIVE_SERVER_VENV)."
        )
    return python


def pinned_version(pyproject: Path) -> str:
    """The mlx-lm version pyproject.toml pins (mlx-lm==X)."""
    text = pyproject.read_text("utf-8")
    m = re.search(r"""["']mlx[-_]lm\s*==\s*([^"';\s]+)""", text)
    if not m:
        raise UserError(
            f'{pyproject} does not pin mlx-lm ("mlx-lm==X" in dependencies); '
            "restore the pin, then run again."
        )
    return m.group(1)


def build_version(upstream: str, patches: int, sha: str) -> str:
    """The version the build reports: upstream's, plus a local label when
    patched (0.32.2+patched2.g1a2b3c4), which still satisfies mlx-lm==0.32.2."""
    if not patches:
        return upstream
    label = f"patched{patches}.g{sha[:7]}"
    return f"{upstream}.{label}" if "+" in upstream else f"{upstream}+{label}"


def contract_problems(site: Path, python: Path, what: str, hint: str) -> tuple[str, list[str]]:
    """Import the mlx_lm in `site` (a directory holding mlx_lm/) with the
    venv's packages and check the adapter's contract against it; returns
    (its version, what moved). UserError naming `what` if it does not import."""
    r = proc.run([str(python), "-c", _CONTRACT, str(site), str(PACKAGE_ROOT)], what=what, hint=hint)
    data = json.loads(r.stdout.strip().splitlines()[-1])
    return data["version"], data["problems"]


def moved_error(version: str, moved: list[str], outcome: str) -> UserError:
    """The one-line error for an mlx-lm that moved names the adapter uses."""
    names = "; ".join(" ".join(problem.split()) for problem in moved)  # one line
    return UserError(
        f"mlx-lm {version} moved {len(moved)} name(s) the adapter uses: "
        f"{names}; {ADAPTER_HINT}; {outcome}"
    )


def check_import(wheel: Path, workdir: Path, python: Path) -> str:
    """Import the wheel's mlx_lm (and its server and converter) from a
    scratch directory with the venv's packages, and check the adapter's
    contract against it; return its version. UserError if it does not
    import, or names what moved."""
    site = workdir / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    version, moved = contract_problems(
        site,
        python,
        what="importing the patched mlx-lm",
        hint="a patch may break the import; the current install is unchanged",
    )
    if moved:
        raise moved_error(version, moved, "the current install is unchanged")
    return version


def install_wheel(wheel: Path, python: Path) -> None:
    print(f"installing {wheel.name} into the venv...", flush=True)
    proc.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--force-reinstall",
            "--disable-pip-version-check",
            str(wheel),
        ],
        what="installing the mlx-lm wheel",
        hint="run ./setup-mlx-lm-repo.sh --status, and --reset to go back to the pinned wheel",
    )


def install_pinned(version: str, python: Path) -> None:
    """The release wheel of mlx-lm `version` from the package index."""
    print(f"installing mlx-lm {version} from PyPI...", flush=True)
    proc.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--force-reinstall",
            "--disable-pip-version-check",
            f"mlx-lm=={version}",
        ],
        what=f"installing mlx-lm {version}",
        hint="check the network reaches PyPI; the current install is unchanged",
    )


def installed(python: Path) -> Installed | None:
    r = proc.run([str(python), "-c", _PROBE], what="reading the installed mlx-lm")
    data = json.loads(r.stdout.strip().splitlines()[-1])
    return Installed(data["version"], data["location"], data["direct_url"] or "") if data else None


def read_record(venv: Path) -> dict | None:
    try:
        return json.loads((venv / RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def write_record(venv: Path, record: dict) -> None:
    tmp = venv / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(venv / RECORD)


def forget_record(venv: Path) -> None:
    (venv / RECORD).unlink(missing_ok=True)
