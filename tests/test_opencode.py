"""Real OpenCode (npm `opencode-ai`, headless `opencode run`) completes a
session against the live server and exits 0 (issue 5).

OpenCode is installed once into ~/.cache/mlx-native-server/npm (or
$MLX_NATIVE_SERVER_NPM_CACHE), outside the repository, and reused.

The agent gets a one-line prompt and no tools: OpenCode's stock prompt with
its tool definitions is about 15.7K tokens, which the demo model prefills at
roughly 150 tokens/s on a 2-core CPU (about 100 s); with the short prompt a
session takes seconds and still exercises the whole path: the provider
(`@ai-sdk/openai-compatible`), streaming, reasoning and the title request.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

OPENCODE_VERSION = "1.18.33"
NPM_DIR = Path(
    os.environ.get(
        "MLX_NATIVE_SERVER_NPM_CACHE", Path.home() / ".cache" / "mlx-native-server" / "npm"
    )
)
RUN_TIMEOUT = 180  # seconds for `opencode run`, including its own start-up


def opencode_binary() -> Path:
    """The cached opencode executable, installed with npm on first use."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed; OpenCode (npm opencode-ai) cannot be installed")
    binary = NPM_DIR / "node_modules" / ".bin" / "opencode"
    version = NPM_DIR / "node_modules" / "opencode-ai" / "package.json"
    if not binary.exists() or json.loads(version.read_text()).get("version") != OPENCODE_VERSION:
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(NPM_DIR),
                "--no-fund",
                "--no-audit",
                f"opencode-ai@{OPENCODE_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return binary


def opencode_config(base_url: str) -> dict:
    return {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            "mlx": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "mlx-native-server",
                "options": {"baseURL": base_url, "apiKey": "unused"},
                "models": {"mlx-local": {"name": "MiniMax (local)"}},
            }
        },
        "model": "mlx/mlx-local",
        "small_model": "mlx/mlx-local",
        "tools": {"*": False},
        "agent": {"build": {"prompt": "You are a helpful assistant. Answer briefly."}},
    }


def isolated_env(home: Path) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
    }
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        env[var] = str(home / sub)
    return env


def test_opencode_run_completes_a_session(server, tmp_path):
    binary = opencode_binary()
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    home.mkdir()
    (project / "opencode.json").write_text(json.dumps(opencode_config(server.base_url), indent=2))
    log_before = server.app_log()

    result = subprocess.run(
        [str(binary), "run", "say hi"],
        cwd=project,
        env=isolated_env(home),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Hello!" in result.stdout  # the demo model's fixed answer
    new_log = server.app_log()[len(log_before) :]
    assert len(re.findall(r"done: prompt=\d+", new_log)) >= 2, new_log  # the session and its title
    assert not re.search(r"-> [45]\d\d ", new_log), new_log
