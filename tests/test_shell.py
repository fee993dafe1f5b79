"""The entry scripts: ShellCheck-clean, and each answers --help."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = (
    sorted(REPO.glob("*.sh")) + sorted((REPO / "scripts").glob("*.sh")) + [REPO / ".ci" / "run"]
)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_are_shellcheck_clean():
    r = subprocess.run(
        ["shellcheck", "-x", *map(str, SCRIPTS)], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in REPO.glob("*.sh")))
def test_every_root_script_has_help(script):
    r = subprocess.run([str(REPO / script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()
