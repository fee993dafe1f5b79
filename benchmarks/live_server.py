"""./start-server.sh on a free loopback port in a scratch home, for the
benchmarks that measure a live server (bench_overhead.py, bench_concurrency.py,
fuzz_server.py). Test hooks are on (isolated_env), so a request can force its
reply (`x_mns_script`). `repo` runs another checkout's server, to measure two
side by side."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 300  # seconds for ./start-server.sh to print "ready:"
REQUEST_TIMEOUT = 600  # seconds a streamed request may take


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stream:
    """One streamed chat completion, timed by perf_counter: sent, the first
    content or reasoning delta, the chunk with finish_reason; usage's counts;
    when each content or reasoning delta came."""

    sent: float
    first: float
    last: float
    tokens: int
    prompt_tokens: int
    deltas: list[float] = field(default_factory=list)

    def tokens_between(self, start: float, end: float) -> float:
        """Tokens that came in (start, end]: its deltas there, each counted
        as the reply's tokens per delta (a delta can carry several)."""
        per_delta = (self.tokens - 1) / max(len(self.deltas) - 1, 1)
        return sum(start < t <= end for t in self.deltas) * per_delta

    @property
    def ttft(self) -> float:
        return self.first - self.sent

    @property
    def decode_tps(self) -> float:
        """Tokens after the first over the time from the first to the last."""
        gap = self.last - self.first
        return (self.tokens - 1) / gap if gap > 0 else float("nan")


def venv_problem(repo: Path, venv: Path | None) -> str | None:
    """Why `repo`'s ./start-server.sh must not run with `venv` (default: its
    .venv), or None. Its bootstrap reinstalls a venv whose stamp names another
    pyproject.toml, which would repoint this checkout's venv at `repo`."""
    venv = venv or repo / ".venv"
    stamp = venv / ".mlx-native-server-stamp"
    if not (repo / "start-server.sh").is_file():
        return f"{repo} is not a checkout of this project (no start-server.sh)"
    if not stamp.is_file():
        return f"{venv} is no venv set up by ./start-server.sh; pass --baseline-venv PATH"
    pyproject = (repo / "pyproject.toml").read_bytes()
    # bootstrap.sh stamps the POSIX cksum of pyproject.toml
    want = subprocess.run(["cksum"], input=pyproject, capture_output=True).stdout.split()[0]
    if stamp.read_bytes().split()[0] != want:
        return (
            f"{repo}/pyproject.toml differs from the one {venv} was set up for, so its "
            "./start-server.sh would reinstall that venv; pass a venv of its own "
            "(--baseline-venv PATH, set up by that checkout's ./start-server.sh --print-config "
            "with MLX_NATIVE_SERVER_VENV=PATH)"
        )
    return None


class LiveServer:
    """The server serving `model` with `flags`; its output in home/`log_name`.

    `repo` (default: this checkout) is the checkout whose ./start-server.sh
    runs, with its package first on PYTHONPATH (a venv's editable install
    would otherwise import another checkout's); `venv` is passed as
    MLX_NATIVE_SERVER_VENV (default: that checkout's .venv)."""

    def __init__(
        self,
        model: str,
        home: Path,
        flags: list[str],
        log_name: str = "server.out",
        repo: Path | None = None,
        venv: Path | None = None,
    ):
        from mlx_native_server.core.paths import isolated_env

        repo = (repo or REPO).resolve()
        self.home, self.port, self.repo = home, free_port(), repo
        argv = [str(repo / "start-server.sh"), "--model", model, "--port", str(self.port), *flags]
        inherited = os.environ.get("PYTHONPATH")
        extra = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), inherited])),
            # the benchmark's own BLAS choice (_demo.same_blas_as_the_server), not the default
            "MLX_NATIVE_SERVER_CPU_BLAS": os.environ.get("MLX_NATIVE_SERVER_CPU_BLAS", "auto"),
        }
        if venv is not None:
            extra["MLX_NATIVE_SERVER_VENV"] = str(venv)
        self.log = (home / log_name).open("w+", errors="replace")
        self.proc = subprocess.Popen(
            argv,
            env=isolated_env(home, **extra),
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

    def status(self) -> dict:
        """GET /status, as JSON."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("GET", "/status")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stream_chat(self, body: dict, on_first: Callable[[], None] | None = None) -> Stream:
        """POST `body` to /v1/chat/completions as a stream (stream and usage
        are set here) and time it; `on_first` is called at the first token.
        Exits with the server's output if the stream carried no tokens."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        sent = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", json.dumps(body), _JSON)
        resp = conn.getresponse()
        first = last = None
        usage: dict = {}
        deltas: list[float] = []
        for line in iter(resp.fp.readline, b""):
            if line.startswith(b"data: [DONE]"):
                break  # the connection stays open (keep-alive)
            if not line.startswith(b"data: {"):
                continue
            now = time.perf_counter()
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                if delta.get("content") or delta.get("reasoning_content"):
                    deltas.append(now)
                    if first is None:
                        first = now
                        if on_first is not None:
                            on_first()
                if choice.get("finish_reason"):
                    last = now
        conn.close()
        if first is None or last is None or not usage.get("completion_tokens"):
            sys.exit(f"error: the server's stream had no tokens:\n{self.output()[-2000:]}")
        return Stream(sent, first, last, usage["completion_tokens"], usage["prompt_tokens"], deltas)


_JSON = {"Content-Type": "application/json"}
