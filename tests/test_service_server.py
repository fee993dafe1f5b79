"""The real server as a service sees it (issue 3): SIGTERM exits 0 (so a
restart-on-failure manager leaves it stopped), SIGKILL does not, and the
watchdog exits non-zero when the engine dies or stops answering
(mlx-lm #1672). Then the real server under the fake launchd and systemd:
a crash brings it back, a stop does not, and stdout.log is rotated."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests

from fakes.harness import FakeServices

WATCHDOG = ["--watchdog-interval", "0.2"]
HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


def test_sigterm_exits_0(start_server):
    with start_server() as srv:
        srv.signal(signal.SIGTERM)
        assert srv.wait(60) == 0


def test_sigkill_exits_non_zero(start_server):
    with start_server() as srv:
        srv.signal(signal.SIGKILL)
        assert srv.wait(60) != 0


def test_watchdog_exits_3_when_the_generation_thread_dies(start_server):
    with start_server(args=WATCHDOG) as srv:
        r = requests.post(srv.root_url + "/_test/break-engine", json={}, timeout=10)
        assert r.status_code == 200
        assert srv.wait(30) == 3
        assert "watchdog: the generation engine has stopped" in srv.app_log()


def test_watchdog_exits_4_when_the_engine_stops_answering(start_server):
    args = [*WATCHDOG, "--watchdog-stall-timeout", "1.5"]
    with start_server(args=args) as srv:
        requests.post(srv.root_url + "/_test/break-engine", json={"hang_seconds": 120}, timeout=10)
        # /health still says ok: only a request that waits shows the hang.
        assert requests.get(srv.root_url + "/health", timeout=10).status_code == 200
        waiting = threading.Thread(
            target=lambda: _quietly(
                requests.post, srv.base_url + "/chat/completions", json=HELLO, timeout=60
            ),
            daemon=True,
        )
        started = time.monotonic()
        waiting.start()
        assert srv.wait(30) == 4
        assert time.monotonic() - started >= 1.5
        assert "made no progress for" in srv.app_log()


def test_a_long_prefill_does_not_trip_the_watchdog(start_server):
    # Small prefill steps make a prompt of a few thousand tokens take seconds
    # on CPU, each step reporting progress well within the stall timeout.
    stall = 0.8
    args = [
        *WATCHDOG,
        "--watchdog-stall-timeout",
        str(stall),
        "--prefill-step-size",
        "32",
        "--max-tokens",
        "20000",
    ]
    with start_server(args=args) as srv:
        body = {"messages": [{"role": "user", "content": "hello world " * 800}], "max_tokens": 1}
        started = time.monotonic()
        r = requests.post(srv.base_url + "/chat/completions", json=body, timeout=120)
        took = time.monotonic() - started
        assert r.status_code == 200, r.text
        if took < 2 * stall:
            pytest.skip(
                f"the prefill took only {took:.1f}s here: too quick to exercise the watchdog"
            )
        assert srv.proc.poll() is None
        assert "watchdog" not in srv.app_log()


def _quietly(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except requests.RequestException:
        pass


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_real_server_under_the_service_manager(manager, tmp_path, demo_model):
    fake = FakeServices(tmp_path, manager, standin=False)
    try:
        _crash_restart_stop(fake, demo_model)
    finally:
        fake.cleanup()


def _crash_restart_stop(fake: FakeServices, demo_model) -> None:
    logs = fake.home / "logs"
    logs.mkdir(parents=True)
    (logs / "stdout.log").write_text("old output\n" * 200)  # over the 1KB cap below
    r = fake.install(demo_model, "--log-max-bytes", "1KB", "--log-backups", "2")
    assert r.returncode == 0, r.stderr
    first = fake.wait_for(lambda s: s["server"]["healthy"])["service"]["pid"]
    # The server rotated the oversized output log when it started.
    assert (logs / "stdout.log.1").read_text().startswith("old output")
    assert "old output" not in (logs / "stdout.log").read_text()

    os.kill(first, signal.SIGKILL)  # a crash: the manager restarts it
    back = fake.wait_for(
        lambda s: s["server"]["healthy"] and s["service"]["pid"] not in (None, first)
    )
    assert back["service"]["last_exit"] == -9 or fake.manager == "systemd"

    if fake.manager == "launchd":  # the seed's command: SIGTERM through launchd
        assert fake.run("launchctl", "stop", "com.local.mlx-native-server").returncode == 0
    else:
        assert fake.run("stop-server.sh", "--port", str(fake.port)).returncode == 0
    fake.wait_for(lambda s: not s["service"]["running"])
    time.sleep(1.0)  # longer than the fakes' restart delay
    stopped = fake.status()
    assert stopped["service"]["running"] is False and stopped["service"]["last_exit"] == 0
    assert not stopped["server"]["healthy"]

    r = fake.run("start-server.sh", "--service")
    assert r.returncode == 0 and r.stdout.startswith("ready: "), r.stdout + r.stderr
    assert fake.run("uninstall-service.sh").returncode == 0
    assert not fake.status()["server"]["healthy"]
