"""mlx-lm's multi-machine mode keeps working: under mlx.launch every rank runs
the same program and rank 0 alone serves HTTP (two ranks on this machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from conftest import free_port, hermetic_env


def test_two_ranks_rank_0_serves(demo_model, tmp_path):
    port, ring_port = free_port(), free_port()
    launcher = Path(sys.executable).parent / "mlx.launch"
    argv = [
        str(launcher),
        "--backend",
        "ring",
        "-n",
        "2",
        "--hosts",
        "127.0.0.1",
        "--starting-port",
        str(ring_port),
        "--env",
        f"MLX_NATIVE_SERVER_HOME={tmp_path}",
        "--",
        sys.executable,
        "-m",
        "mlx_native_server",
        "serve",
        "--model",
        str(demo_model),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        argv,
        env=hermetic_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        r = requests.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=120,
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 30},
        )
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["reasoning_content"].startswith("The user wrote")
    finally:
        # mlx.launch and both ranks share the session started for them.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _wait_for_ranks_to_exit(port)
    log = (tmp_path / "logs" / "app.log").read_text()
    assert log.count("ready: ") == 1  # one rank serves


def _wait_for_ranks_to_exit(port: int, timeout: float = 30) -> None:
    """No rank may outlive the test (a leftover rank spins on collectives)."""
    deadline = time.monotonic() + timeout
    while True:
        left = subprocess.run(
            ["pgrep", "-f", f"mlx_native_server serve .*--port {port}$"],
            capture_output=True,
            text=True,
        ).stdout.split()
        left = [p for p in left if p.isdigit()]
        if not left:
            return
        if time.monotonic() > deadline:
            for pid in left:
                os.kill(int(pid), signal.SIGKILL)
            raise AssertionError(f"ranks still running after SIGTERM: {left}")
        time.sleep(0.5)
