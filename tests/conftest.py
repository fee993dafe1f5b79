"""Shared fixtures: the generated demo model and real servers started by the
real scripts on free ports, each in its own home directory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlx_native_server.core.paths import isolated_env

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180  # seconds; loading the tiny model takes a few


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_kv(n: int) -> list:
    """A two-layer KV cache of `n` tokens (ones), for prompt-cache tests."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    cache = [KVCache() for _ in range(2)]
    for c in cache:
        x = mx.ones((1, 2, n, 64), dtype=mx.float16)
        c.update_and_fetch(x, x)
    return cache


def hermetic_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a script run: its own home, no inherited settings."""
    return isolated_env(home, **extra)


class ServerProcess:
    """`./start-server.sh ARGS` in the background, with its output captured."""

    def __init__(
        self,
        home: Path,
        args: list[str],
        env: dict[str, str] | None = None,
        port: int | None = None,
    ):
        self.home = home
        self.port = port or free_port()
        self.argv = [str(REPO / "start-server.sh"), "--port", str(self.port), *args]
        self.env = hermetic_env(home, **(env or {}))
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return "".join(self.lines)

    def app_log(self) -> str:
        path = self.home / "logs" / "app.log"
        return path.read_text() if path.exists() else ""

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("ready: "):
                self.ready.set()

    def start(self, wait: bool = True) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout}s:\n{self.output()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    """The tiny generated MiniMax model (random weights, real tokenizer)."""
    from mlx_native_server.models import demo as generator

    path = tmp_path_factory.mktemp("models") / "demo"
    generator.generate(path, progress=lambda *a, **k: None)
    return path


# The shared server: a small context cap so overflow is cheap to reach, and
# KV quantization from the first token so the quantized path always runs.
SERVER_ARGS = ["--max-tokens", "4096", "--quantized-kv-start", "0", "--prompt-cache-size", "4"]


@pytest.fixture(scope="session")
def server(demo_model, tmp_path_factory):
    """One live server on the demo model, shared by the session."""
    srv = ServerProcess(tmp_path_factory.mktemp("home"), ["--model", str(demo_model), *SERVER_ARGS])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def start_server(demo_model, tmp_path):
    """Factory: `with start_server(args=[...], env={...}) as srv:` a server of
    its own (model defaults to the demo model), stopped afterwards."""
    started: list[ServerProcess] = []

    @contextlib.contextmanager
    def factory(
        args: list[str] | None = None,
        env: dict | None = None,
        model: Path | str | None = None,
        wait: bool = True,
        home: Path | None = None,
    ):
        home = home or tmp_path / f"home{len(started)}"
        srv = ServerProcess(home, ["--model", str(model or demo_model), *(args or [])], env)
        started.append(srv)
        srv.start(wait=wait)
        try:
            yield srv
        finally:
            srv.stop()

    yield factory
    for srv in started:
        srv.stop()


def run_script(
    name: str, *args: str, home: Path, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a root script to completion in a hermetic home."""
    return subprocess.run(
        [str(REPO / name), *args],
        env=hermetic_env(home, **(env or {})),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def script():
    return run_script


PYTHON = sys.executable


@pytest.fixture(scope="session", autouse=True)
def no_server_outlives_the_suite(tmp_path_factory):
    """Safety net: kill any server process whose home is under this run's
    temp dir (a test that failed mid-way may have left one)."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            env = (proc_dir / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        home = next(
            (
                e[len(b"MLX_NATIVE_SERVER_HOME=") :]
                for e in env
                if e.startswith(b"MLX_NATIVE_SERVER_HOME=")
            ),
            b"",
        )
        if home.decode(errors="replace").startswith(base) and int(proc_dir.name) != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(int(proc_dir.name), signal.SIGKILL)
