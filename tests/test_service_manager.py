"""install-service / uninstall-service / status / stop / start --service
(issue 3) against fake `launchctl` and `systemctl` first on PATH.

The fakes run a stand-in (answers /health on the recorded --port, exits 0
on SIGTERM) instead of the server, so each flow takes about a second;
test_service_server.py runs the real server under them.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import time

import pytest

from conftest import REPO
from fakes.harness import FakeServices

MANAGERS = ["launchd", "systemd"]


@pytest.fixture(params=MANAGERS)
def fake(request, tmp_path):
    f = FakeServices(tmp_path, request.param)
    yield f
    f.cleanup()


def install_calls(fake: FakeServices, reinstall: bool = False) -> list[list[str]]:
    if fake.manager == "launchd":
        first = [["launchctl", "bootout", fake.target]] if reinstall else []
        return first + [["launchctl", "bootstrap", f"gui/{os.getuid()}", str(fake.file)]]
    if reinstall:
        return [
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", fake.name],
            ["systemctl", "--user", "restart", fake.name],
        ]
    return [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", fake.name],
    ]


def uninstall_calls(fake: FakeServices) -> list[list[str]]:
    if fake.manager == "launchd":
        return [["launchctl", "bootout", fake.target]]
    return [
        ["systemctl", "--user", "disable", "--now", fake.name],
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "reset-failed", fake.name],
    ]


def test_install_uninstall_reinstall(fake, demo_model):
    r = fake.install(demo_model)
    assert r.returncode == 0, r.stderr
    assert f"wrote {fake.file}" in r.stdout and "./start-server.sh --status" in r.stdout
    assert fake.changes() == install_calls(fake)
    first = fake.wait_for(lambda s: s["server"]["healthy"])
    assert first["service"]["running"] and first["service"]["pid"]

    fake.forget_calls()
    r = fake.install(demo_model, "--served-model-id", "renamed")
    assert r.returncode == 0, r.stderr
    assert fake.changes() == install_calls(fake, reinstall=True)
    assert "renamed" in fake.file.read_text()
    second = fake.wait_for(lambda s: s["server"]["healthy"])
    assert second["service"]["pid"] != first["service"]["pid"]

    fake.forget_calls()
    r = fake.run("uninstall-service.sh")
    assert r.returncode == 0, r.stderr
    assert "stopped and" in r.stdout and f"removed {fake.file}" in r.stdout
    assert fake.changes() == uninstall_calls(fake)
    assert not fake.file.exists()
    assert not (fake.file.parent / "default.target.wants" / fake.name).is_symlink()
    gone = fake.status()
    assert gone["service"]["installed"] is False and not gone["server"]["healthy"]

    fake.forget_calls()
    r = fake.run("uninstall-service.sh")
    assert r.returncode == 0 and "nothing to do" in r.stdout
    assert fake.changes() == []

    r = fake.install(demo_model)
    assert r.returncode == 0, r.stderr
    fake.wait_for(lambda s: s["server"]["healthy"])


def test_stop_server_stops_the_service_for_good_and_start_service_brings_it_back(fake, demo_model):
    assert fake.install(demo_model).returncode == 0
    pid = fake.wait_for(lambda s: s["server"]["healthy"])["service"]["pid"]

    r = fake.run("start-server.sh", "--port", str(fake.port))
    assert r.returncode == 0, r.stderr
    assert f"already running as the login service {fake.name} (pid {pid})" in r.stdout

    fake.forget_calls()
    r = fake.run("stop-server.sh", "--port", str(fake.port))
    assert r.returncode == 0, r.stderr
    assert "stays stopped" in r.stdout
    expected = (
        ["launchctl", "kill", "TERM", fake.target]
        if fake.manager == "launchd"
        else ["systemctl", "--user", "stop", fake.name]
    )
    assert fake.changes() == [expected]
    # Past the fakes' restart delay, it is still down: a clean exit is not a crash.
    time.sleep(1.0)
    down = fake.status()
    assert down["service"]["running"] is False and down["service"]["last_exit"] == 0
    assert down["service"]["loaded"] is True and not down["server"]["healthy"]

    r = fake.run("stop-server.sh", "--port", str(fake.port))
    assert r.returncode == 0 and "not running" in r.stdout

    fake.forget_calls()
    r = fake.run("start-server.sh", "--service")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"ready: http://localhost:{fake.port}/v1")
    expected = (
        ["launchctl", "kickstart", fake.target]
        if fake.manager == "launchd"
        else ["systemctl", "--user", "start", fake.name]
    )
    assert fake.changes() == [expected]
    r = fake.run("start-server.sh", "--service")
    assert r.returncode == 0 and "already running" in r.stdout


def test_status_text_and_json(fake, demo_model):
    r = fake.run("start-server.sh", "--status")
    assert r.returncode == 3
    assert "installed: no" in r.stdout and "./install-service.sh" in r.stdout

    assert fake.install(demo_model).returncode == 0
    s = fake.wait_for(lambda s: s["server"]["healthy"])
    svc, logs = s["service"], s["logs"]
    assert (svc["manager"], svc["name"], svc["file"]) == (fake.manager, fake.name, str(fake.file))
    assert svc["installed"] and svc["loaded"] and svc["running"] and svc["last_exit"] is None
    assert s["server"] == {
        "url": f"http://localhost:{fake.port}/v1",
        "port": fake.port,
        "pid": svc["pid"],
        "healthy": True,
        "health": {"http_status": 200, "status": "ok"},
    }
    assert logs["app"] == str(fake.home / "logs" / "app.log")
    assert logs["stdout"] == str(fake.home / "logs" / "stdout.log")

    r = fake.run("start-server.sh", "--status")
    assert r.returncode == 0
    for line in (
        "installed: yes",
        "loaded:    yes",
        f"running:   yes (pid {svc['pid']})",
        "last exit: none yet",
        "healthy:   ok",
        f"logs:    {logs['app']}",
    ):
        assert line in r.stdout, r.stdout
    # The service's output went where the file says.
    assert "standin" in (fake.home / "logs" / "stdout.log").read_text()


def test_install_records_only_the_flags_given(fake, demo_model):
    r = fake.run(
        "install-service.sh",
        "--print",
        "--model",
        str(demo_model),
        "--port",
        "8123",
        MLX_NATIVE_SERVER_KV_BITS="8",
    )
    assert r.returncode == 0, r.stderr
    assert fake.calls() == [] and not fake.file.exists()
    if fake.manager == "launchd":
        args = plistlib.loads(r.stdout.encode())["ProgramArguments"]
        env = plistlib.loads(r.stdout.encode())["EnvironmentVariables"]
        assert env["MLX_NATIVE_SERVER_HOME"] == str(fake.home)
    else:
        args = [line for line in r.stdout.splitlines() if line.startswith("ExecStart=")][0].split()
        assert f"Environment=MLX_NATIVE_SERVER_HOME={fake.home}" in r.stdout
    assert args[-5:] == ["serve", "--model", str(demo_model), "--port", "8123"]
    assert "--kv-bits" not in r.stdout  # the environment is read at each start, not frozen


def test_install_refuses_what_could_only_crash_loop(fake, tmp_path):
    r = fake.run("install-service.sh", "--model", str(tmp_path / "nope"))
    assert (
        r.returncode == 1 and r.stderr.startswith("error: model ") and "Traceback" not in r.stderr
    )
    assert fake.calls() == [] and not fake.file.exists()


def test_start_service_without_the_service_says_how_to_install(fake):
    r = fake.run("start-server.sh", "--service")
    assert r.returncode == 1
    assert "not installed" in r.stderr and "./install-service.sh" in r.stderr


def test_no_systemd_user_session_says_how_to_enable_lingering(tmp_path, demo_model):
    fake = FakeServices(tmp_path, "systemd", FAKE_SYSTEMD_NO_BUS="1")
    r = fake.install(demo_model)
    assert r.returncode == 1
    assert "no user session" in r.stderr and "sudo loginctl enable-linger" in r.stderr
    assert f"wrote {fake.file}" in r.stderr and "Traceback" not in r.stderr
    s = fake.status()
    assert s["service"]["installed"] and s["service"]["loaded"] is None
    assert "no user session" in s["service"]["detail"]
    r = fake.run("uninstall-service.sh")
    assert r.returncode == 0 and f"removed {fake.file}" in r.stdout
    assert "could not ask systemd" in r.stdout


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="no systemctl here")
def test_real_systemctl_without_a_user_session(tmp_path, demo_model):
    probe = subprocess.run(
        ["systemctl", "--user", "show-environment"], capture_output=True, text=True
    )
    if "Failed to connect" not in probe.stderr:
        pytest.skip("this machine has a systemd user session; the fakes cover the flow")
    fake = FakeServices(tmp_path, "systemd")
    env = {"PATH": os.environ["PATH"]}  # the real systemctl, not the fake
    r = fake.run("install-service.sh", "--model", str(demo_model), "--port", str(fake.port), **env)
    assert r.returncode == 1 and "sudo loginctl enable-linger" in r.stderr, r.stderr
    assert fake.run("uninstall-service.sh", **env).returncode == 0
    assert not fake.file.exists()


def test_scripts_have_help():
    for script in ("install-service.sh", "uninstall-service.sh"):
        r = subprocess.run(
            [str(REPO / script), "--help"], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0 and "usage:" in r.stdout.lower(), r.stderr
