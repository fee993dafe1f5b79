"""Putting an mlx-lm build into the venv, and telling what is there.

A wheel (wheel_build.py) is imported from a scratch directory before the
venv is touched, and is installed with --no-deps so
mlx and the rest stay as they are. A record in the venv says where the
installed mlx-lm came from.
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
        raise UserError(f"there is no virtual environment at {venv}; run ./start-server.sh --help "
                        "once to create it (or set MLX_NATIVE_SERVER_VENV).")
    return python


def pinned_version(pyproject: Path) -> str:
    """The mlx-lm version pyproject.toml pins (mlx-lm==X)."""
    text = pyproject.read_text("utf-8")
    m = re.search(r"""["']mlx[-_]lm\s*==\s*([^"';\s]+)""", text)
    if not m:
        raise UserError(f"{pyproject} does not pin mlx-lm (\"mlx-lm==X\" in dependencies); "
                        "restore the pin, then run again.")
    return m.group(1)


def build_version(upstream: str, patches: int, sha: str) -> str:
    """The version the build reports: upstream's, plus a local label when
    patched (0.32.2+patched2.g1a2b3c4), which still satisfies mlx-lm==0.32.2."""
    if not patches:
        return upstream
    label = f"patched{patches}.g{sha[:7]}"
    return f"{upstream}.{label}" if "+" in upstream else f"{upstream}+{label}"


def check_import(wheel: Path, workdir: Path, python: Path) -> str:
    """Import the wheel's mlx_lm (and its server and converter) from a
    scratch directory with the venv's packages; return its version."""
    site = workdir / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import mlx_lm, mlx_lm.server, "
            "mlx_lm.convert; print(mlx_lm.__version__)")
    r = proc.run([python, "-c", code, site], what="importing the patched mlx-lm",
                 hint="a patch may break the import; the current install is unchanged")
    return r.stdout.strip().splitlines()[-1]


def install_wheel(wheel: Path, python: Path) -> None:
    print(f"installing {wheel.name} into the venv...", flush=True)
    proc.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
              "--force-reinstall", "--disable-pip-version-check", wheel],
             what="installing the mlx-lm wheel",
             hint="run ./setup-mlx-lm-repo.sh --status, and --reset to go back to the pinned wheel")


def install_pinned(version: str, python: Path) -> None:
    """The release wheel of mlx-lm `version` from the package index."""
    print(f"installing mlx-lm {version} from PyPI...", flush=True)
    proc.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
              "--disable-pip-version-check", f"mlx-lm=={version}"],
             what=f"installing mlx-lm {version}",
             hint="check the network reaches PyPI; the current install is unchanged")


def installed(python: Path) -> Installed | None:
    r = proc.run([python, "-c", _PROBE], what="reading the installed mlx-lm")
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
