"""The login service's files (issue 3): whole-file golden comparisons, the
keys launchd and systemd act on, and `systemd-analyze verify`.

Regenerate the golden files after an intended change with
UPDATE_GOLDEN=1 pytest tests/test_service_render.py.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_native_server.core.paths import SERVICE_LABEL
from mlx_native_server.service.render import (
    ServiceSpec,
    recorded_args_from_plist,
    recorded_args_from_unit,
    render_plist,
    render_unit,
    stop_grace,
)

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
TEMPLATE = REPO / f"{SERVICE_LABEL}.plist.template"

MAC = ServiceSpec(
    repo_dir=Path("/Users/me/mlx-native-server"),
    python=Path("/Users/me/mlx-native-server/.venv/bin/python"),
    log_dir=Path("/Users/me/mlx-native-server/logs"),
    args=("--port", "8001"),
    stop_grace=30,
)
LINUX = ServiceSpec(
    repo_dir=Path("/home/me/mlx-native-server"),
    python=Path("/home/me/mlx-native-server/.venv/bin/python"),
    log_dir=Path("/home/me/mlx-native-server/logs"),
    args=("--port", "8001"),
    stop_grace=30,
)


def assert_golden(name: str, content: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_bytes(content)
    assert content.decode() == path.read_text(), f"{name} differs (UPDATE_GOLDEN=1 rewrites it)"


def plist_of(spec: ServiceSpec) -> dict:
    return plistlib.loads(render_plist(TEMPLATE.read_bytes(), spec))


def test_rendered_plist_matches_the_golden_file():
    assert_golden(f"{SERVICE_LABEL}.plist", render_plist(TEMPLATE.read_bytes(), MAC))


def test_rendered_unit_matches_the_golden_file():
    assert_golden("mlx-native-server.service", render_unit(LINUX))


def test_template_is_a_real_plist_with_placeholders_and_the_seed_label():
    template = plistlib.loads(TEMPLATE.read_bytes())
    assert template["Label"] == "com.local.mlx-native-server"
    assert template["ProgramArguments"][0] == "__PYTHON__"
    assert template["WorkingDirectory"] == "__REPO_DIR__"


def test_plist_has_the_keys_launchd_acts_on():
    plist = plist_of(MAC)
    assert plist["Label"] == SERVICE_LABEL
    assert plist["ProgramArguments"] == [
        "/Users/me/mlx-native-server/.venv/bin/python",
        "-m",
        "mlx_native_server",
        "serve",
        "--port",
        "8001",
    ]
    assert plist["WorkingDirectory"] == "/Users/me/mlx-native-server"
    path = plist["EnvironmentVariables"]["PATH"].split(":")
    assert path[0] == "/Users/me/mlx-native-server/.venv/bin"
    assert {"/opt/homebrew/bin", "/usr/bin", "/bin"} <= set(path)
    assert plist["StandardOutPath"] == "/Users/me/mlx-native-server/logs/stdout.log"
    assert plist["StandardErrorPath"] == "/Users/me/mlx-native-server/logs/stderr.log"
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restart after a crash only
    assert isinstance(plist["ThrottleInterval"], int) and plist["ThrottleInterval"] > 0
    assert plist["ExitTimeOut"] == 30


def test_unit_restarts_on_failure_only_and_logs_to_the_same_files():
    lines = render_unit(LINUX).decode().splitlines()
    assert "Restart=on-failure" in lines
    assert "RestartSec=10" in lines
    python = "/home/me/mlx-native-server/.venv/bin/python"
    assert f"ExecStart={python} -m mlx_native_server serve --port 8001" in lines
    assert "StandardOutput=append:/home/me/mlx-native-server/logs/stdout.log" in lines
    assert "StandardError=append:/home/me/mlx-native-server/logs/stderr.log" in lines
    assert "WantedBy=default.target" in lines


def test_recorded_flags_survive_quoting_in_both_files():
    args = ("--model", 'my models/50% $HOME "x" \\y;z', "--api-key", "k$y%")
    spec = ServiceSpec(
        repo_dir=Path("/r"),
        python=Path("/r/.venv/bin/python"),
        log_dir=Path("/r/logs"),
        args=args,
        environment=(("MLX_NATIVE_SERVER_HOME", "/a b/50%"),),
    )
    assert recorded_args_from_unit(render_unit(spec)) == list(args)
    assert recorded_args_from_plist(render_plist(TEMPLATE.read_bytes(), spec)) == list(args)
    assert 'Environment="MLX_NATIVE_SERVER_HOME=/a b/50%%"' in render_unit(spec).decode()
    assert plist_of(spec)["EnvironmentVariables"]["MLX_NATIVE_SERVER_HOME"] == "/a b/50%"


def test_stop_grace_covers_the_drain():
    assert stop_grace(10.0) == 30
    assert stop_grace(45.5) == 66


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package systemd)",
)
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart's program exists, so point it at real paths.
    spec = ServiceSpec(
        repo_dir=REPO,
        python=Path(sys.executable),
        log_dir=tmp_path / "logs",
        args=("--model", "demo", "--port", "8001"),
        environment=(("MLX_NATIVE_SERVER_HOME", str(tmp_path)),),
    )
    unit = tmp_path / "mlx-native-server.service"
    unit.write_bytes(render_unit(spec))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    complaints = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if str(unit) in line or "mlx-native-server" in line
    ]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr
