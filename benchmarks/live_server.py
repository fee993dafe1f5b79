"""./start-server.sh on a free loopback port in a scratch home, for the
benchmarks that measure a live server (bench_overhead.py, fuzz_server.py).
Test hooks are on (isolated_env), so a request can force its reply."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 300  # seconds for ./start-server.sh to print "ready:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The server serving `model` with `flags`; its output in home/`log_name`."""

    def __init__(self, model: str, home: Path, flags: list[str], log_name: str = "server.out"):
        from mlx_native_server.core.paths import isolated_env

        self.home, self.port = home, free_port()
        argv = [str(REPO / "start-server.sh"), "--model", model, "--port", str(self.port), *flags]
        self.log = (home / log_name).open("w+", errors="replace")
        self.proc = subprocess.Popen(
            argv,
            env=isolated_env(home),
            cwd=home,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + START_TIMEOUT
        while "ready: " not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"error: the server did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM to its process group, then SIGKILL after 30 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
