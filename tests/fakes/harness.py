"""Test side of the fake service managers: a hermetic home with the fakes
first on PATH, the root scripts run in it, and the fakes' record read back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO, free_port, hermetic_env

FAKES = Path(__file__).resolve().parent


class FakeServices:
    """One user's home, service manager (launchd or systemd) and port."""

    def __init__(self, root: Path, manager: str, standin: bool = True, **env: str):
        self.manager = manager
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.dir = root / "fake"
        self.port = free_port()
        self.env = hermetic_env(
            self.home,
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            PATH=f"{FAKES}:{os.environ['PATH']}",
            FAKE_SERVICE_DIR=str(self.dir),
            FAKE_SERVICE_STANDIN="1" if standin else "0",
            MLX_NATIVE_SERVER_SERVICE_MANAGER=manager,
            **env,
        )

    @property
    def file(self) -> Path:
        if self.manager == "launchd":
            return self.home / "Library" / "LaunchAgents" / "com.local.mlx-native-server.plist"
        return self.home / ".config" / "systemd" / "user" / "mlx-native-server.service"

    @property
    def name(self) -> str:
        return (
            "com.local.mlx-native-server"
            if self.manager == "launchd"
            else "mlx-native-server.service"
        )

    @property
    def target(self) -> str:
        return f"gui/{os.getuid()}/com.local.mlx-native-server"

    def run(
        self, script: str, *args: str, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess:
        argv = [str(REPO / script), *args] if script.endswith(".sh") else [script, *args]
        return subprocess.run(
            argv,
            env={**self.env, **env},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def install(self, model, *flags: str) -> subprocess.CompletedProcess:
        return self.run(
            "install-service.sh", "--model", str(model), "--port", str(self.port), *flags
        )

    def status(self) -> dict:
        r = self.run("start-server.sh", "--status", "--json")
        assert r.returncode in (0, 3), r.stderr
        return json.loads(r.stdout)

    def calls(self) -> list[list[str]]:
        path = self.dir / "calls.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def changes(self) -> list[list[str]]:
        """The calls that change something (not print/show/list/loginctl)."""
        quiet = {"print", "show", "list", "is-active"}
        return [c for c in self.calls() if c[0] != "loginctl" and not quiet & set(c[1:3])]

    def forget_calls(self) -> None:
        (self.dir / "calls.log").unlink(missing_ok=True)

    def wait_for(self, check, timeout: float = 60.0) -> dict:
        """Poll status until check(status) holds; returns that status."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.status()
            if check(s):
                return s
            assert time.monotonic() < deadline, f"timed out; last status: {s}"
            time.sleep(0.2)

    def cleanup(self) -> None:
        """Kill what the fakes started (each supervisor leads its own process group)."""
        path = self.dir / "state.json"
        if not path.exists():
            return
        for j in json.loads(path.read_text())["jobs"].values():
            kills = [(os.killpg, j.get("supervisor")), (os.kill, j.get("pid"))]
            for kill, pid in kills:
                if pid:
                    try:
                        kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
