"""Fake launchd and systemd for tests: `launchctl`, `systemctl --user` and
`loginctl` that record their argv and answer like the real tools.

They keep their state in $FAKE_SERVICE_DIR/state.json and really run the
job: a detached supervisor process starts the program of the plist or unit
and restarts it after a failure when the file asks for that (KeepAlive
{SuccessfulExit: false}, Restart=on-failure), after FAKE_SERVICE_THROTTLE
seconds (0.3 by default, where the real tools wait ThrottleInterval or
RestartSec). With FAKE_SERVICE_STANDIN=1 the supervisor runs standin.py
(answers /health on the job's --port, exits 0 on SIGTERM) instead of the
real server, which keeps most tests fast. FAKE_SYSTEMD_NO_BUS=1 makes
`systemctl --user` fail as it does without a user session.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import plistlib
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STOP_WAIT = 15.0  # seconds a fake stop waits for SIGTERM before SIGKILL


def _dir() -> Path:
    d = os.environ.get("FAKE_SERVICE_DIR")
    if not d:
        sys.exit("fake service manager: FAKE_SERVICE_DIR is not set")
    return Path(d)


@contextlib.contextmanager
def locked():
    """The state, read and written under a lock."""
    d = _dir()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "state.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = d / "state.json"
        state = json.loads(path.read_text()) if path.exists() else {"jobs": {}}
        yield state
        path.write_text(json.dumps(state, indent=1))


def read_state() -> dict:
    with locked() as state:
        return state


def job(name: str) -> dict | None:
    return read_state()["jobs"].get(name)


def record(tool: str, argv: list[str]) -> None:
    _dir().mkdir(parents=True, exist_ok=True)
    with open(_dir() / "calls.log", "a") as f:
        f.write(json.dumps([tool, *argv]) + "\n")


# --- the supervisor ----------------------------------------------------------


def spawn_supervisor(name: str) -> None:
    with locked() as state:
        j = state["jobs"][name]
        j["stop_requested"] = False
        if j.get("supervisor") and _alive(j["supervisor"]):
            return
        p = subprocess.Popen(
            [sys.executable, str(HERE / "fakesvc.py"), "supervise", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        j["supervisor"] = p.pid
        j["state"] = "starting"
    # Like systemd's Type=simple and launchd: return once the process exists.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        j = job(name)
        if j is None or j.get("running") or j.get("supervisor") is None:
            return
        time.sleep(0.02)


def supervise(name: str) -> int:
    throttle = float(os.environ.get("FAKE_SERVICE_THROTTLE", "0.3"))
    while True:
        with locked() as state:
            j = state["jobs"].get(name)
            if j is None or j.get("stop_requested"):
                if j is not None:
                    j["supervisor"] = None
                return 0
            argv = j["argv"]
            if os.environ.get("FAKE_SERVICE_STANDIN") == "1":
                argv = [sys.executable, str(HERE / "standin.py"), *argv]
            Path(j["stdout"]).parent.mkdir(parents=True, exist_ok=True)
            with open(j["stdout"], "ab") as out, open(j["stderr"], "ab") as err:
                child = subprocess.Popen(
                    argv,
                    cwd=j["cwd"],
                    env={**os.environ, **j["env"]},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            j.update(pid=child.pid, running=True, runs=j.get("runs", 0) + 1, state="running")
        code = child.wait()
        with locked() as state:
            j = state["jobs"].get(name)
            if j is None:
                return 0
            j.update(pid=None, running=False, last_exit=code)
            again = code != 0 and j["restart_on_failure"] and not j.get("stop_requested")
            j["state"] = "auto-restart" if again else ("failed" if code != 0 else "dead")
            if not again:
                j["supervisor"] = None
                return 0
        time.sleep(throttle)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_job(name: str, sig: int = signal.SIGTERM, wait: float = STOP_WAIT) -> None:
    """Ask the supervisor to stop, signal the process, wait, then SIGKILL."""
    with locked() as state:
        j = state["jobs"].get(name)
        if j is None:
            return
        j["stop_requested"] = True
        pid = j.get("pid")
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        j = job(name)
        if j is None or (not j.get("running") and j.get("supervisor") is None):
            return
        time.sleep(0.05)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while (j := job(name)) is not None and j.get("supervisor") is not None:
        if not _alive(j["supervisor"]):
            break
        time.sleep(0.05)


def main(tool: str, argv: list[str]) -> int:
    record(tool, argv)
    if tool == "launchctl":
        import fake_launchctl

        return fake_launchctl.main(argv)
    if tool == "systemctl":
        import fake_systemctl

        return fake_systemctl.main(argv)
    if tool == "loginctl":
        print(f"Linger={os.environ.get('FAKE_LINGER', 'no')}")
        return 0
    return 2


def load_plist(path: str) -> dict:
    with open(path, "rb") as f:
        return plistlib.load(f)


def split_exec(line: str) -> list[str]:
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line)]


if __name__ == "__main__" and sys.argv[1:2] == ["supervise"]:
    sys.exit(supervise(sys.argv[2]))
