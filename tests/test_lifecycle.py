"""Start, stop and the messages a user sees, through the real root scripts."""

from __future__ import annotations

import signal
import socket
import time

import requests

from conftest import free_port, hermetic_env


def test_sigterm_finishes_cleanly_with_exit_0(start_server):
    with start_server() as srv:
        pid_file = srv.home / "run" / f"server-{srv.port}.pid"
        assert pid_file.read_text().strip() == str(srv.pid)
        assert (srv.home / "logs" / "app.log").exists()
        assert f"ready: http://localhost:{srv.port}/v1 (model mlx-local)" in srv.output()
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
        assert not pid_file.exists()


def test_sigterm_lets_the_request_in_flight_finish(start_server):
    script = "word " * 400
    with start_server() as srv:
        import threading

        result = {}

        def call():
            r = requests.post(
                srv.base_url + "/chat/completions",
                timeout=60,
                json={"messages": [{"role": "user", "content": "hi"}], "x_mns_script": script},
            )
            result["status"] = r.status_code
            result["tokens"] = r.json()["usage"]["completion_tokens"]

        t = threading.Thread(target=call)
        t.start()
        deadline = time.monotonic() + 30  # signal once the engine has the request
        while requests.get(srv.root_url + "/status", timeout=10).json()["requests_in_flight"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        srv.signal(signal.SIGTERM)
        t.join(60)
        assert srv.wait() == 0
        assert result["status"] == 200


def test_stop_script_stops_it_and_not_running_is_fine(start_server, script, tmp_path):
    with start_server() as srv:
        r = script("stop-server.sh", "--port", str(srv.port), home=srv.home)
        assert r.returncode == 0, r.stderr
        assert f"(pid {srv.pid}, port {srv.port}): stopped." in r.stdout
        assert srv.wait() == 0
        again = script("stop-server.sh", "--port", str(srv.port), home=srv.home)
        assert again.returncode == 0
        assert f"not running on port {srv.port}" in again.stdout


def test_busy_port_names_the_holder(script, tmp_path, demo_model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = script(
            "start-server.sh", "--model", str(demo_model), "--port", str(port), home=tmp_path
        )
    assert r.returncode != 0
    assert f"error: port {port} (set by --port) is in use by pid" in r.stderr
    assert "Traceback" not in r.stderr


def test_second_start_on_the_same_port_says_it_is_ours(start_server, script):
    with start_server() as srv:
        r = script("start-server.sh", "--model", "demo", "--port", str(srv.port), home=srv.home)
        assert r.returncode != 0
        assert (
            f"mlx-native-server is already running on port {srv.port} (pid {srv.pid})" in r.stderr
        )


def test_missing_model_says_what_to_run(script, tmp_path):
    r = script("start-server.sh", "--port", str(free_port()), home=tmp_path)
    assert r.returncode == 1
    line = r.stderr.strip()
    assert line.startswith(
        "error: model 'local-models/MiniMax-M2.1-REAP-50-MLX-4bit' (the default) not found"
    )
    assert "./convert-model.sh <hf-repo>" in line and "--model demo" in line
    assert "Traceback" not in r.stderr


def test_a_directory_that_is_not_a_model(script, tmp_path):
    (tmp_path / "empty").mkdir()
    r = script("start-server.sh", "--model", "empty", "--port", str(free_port()), home=tmp_path)
    assert r.returncode == 1 and "is not an MLX model (it needs config.json" in r.stderr


def test_non_loopback_without_a_key_is_refused(script, tmp_path, demo_model):
    r = script("start-server.sh", "--model", str(demo_model), "--host", "0.0.0.0", home=tmp_path)
    assert r.returncode == 1 and "without an API key" in r.stderr


def test_api_key_accepts_bearer_and_x_api_key(start_server):
    with start_server(env={"MLX_NATIVE_SERVER_API_KEY": "sekrit"}) as srv:
        url = srv.base_url + "/models"
        denied = requests.get(url, timeout=10)
        assert (
            denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
        )
        assert (
            requests.get(url, headers={"Authorization": "Bearer sekrit"}, timeout=10).status_code
            == 200
        )
        assert requests.get(url, headers={"x-api-key": "sekrit"}, timeout=10).status_code == 200
        assert requests.get(srv.root_url + "/health", timeout=10).status_code == 200
        assert (
            "Access-Control-Allow-Origin"
            not in requests.get(
                url, headers={"Origin": "http://evil.example", "x-api-key": "sekrit"}, timeout=10
            ).headers
        )


def test_a_body_that_never_arrives_times_out(start_server):
    with start_server(args=["--request-timeout", "1"]) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            start = time.monotonic()
            data = s.recv(4096)
            while chunk := s.recv(4096):
                data += chunk
        assert time.monotonic() - start < 8
        assert data.startswith(b"HTTP/1.1 408")
        assert requests.get(srv.root_url + "/health", timeout=10).status_code == 200


def test_print_config_shows_values_and_origins(script, tmp_path):
    (tmp_path / "server.toml").write_text("port = 8123\n")
    r = script(
        "start-server.sh",
        "--print-config",
        "--kv-bits",
        "8",
        home=tmp_path,
        env={"MLX_NATIVE_SERVER_MAX_TOKENS": "64000"},
    )
    assert r.returncode == 0
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if not line.startswith("#")}
    assert lines["port"].endswith("# set in server.toml")
    assert lines["kv_bits"].endswith("# set by --kv-bits")
    assert lines["max_tokens"].endswith("# set by MLX_NATIVE_SERVER_MAX_TOKENS")
    assert lines["host"].endswith("# default")


def test_demo_model_is_generated_on_first_use(start_server, tmp_path):
    with start_server(model="demo") as srv:
        assert (srv.home / "local-models" / "demo" / "config.json").exists()
        r = requests.post(
            srv.base_url + "/chat/completions",
            timeout=60,
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200
    assert "random" in srv.output().lower()


def test_help_works_before_and_after_the_venv(script, tmp_path):
    r = script("start-server.sh", "--help", home=tmp_path)
    assert r.returncode == 0 and "--model" in r.stdout and "--port" in r.stdout
    empty_venv = hermetic_env(tmp_path, MLX_NATIVE_SERVER_VENV=str(tmp_path / "no-venv"))
    import subprocess

    from conftest import REPO

    r = subprocess.run(
        [str(REPO / "stop-server.sh"), "--help"],
        env=empty_venv,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and r.stdout.startswith("Usage: ./stop-server.sh")
    assert not (tmp_path / "no-venv").exists()


def test_a_stream_queued_behind_another_request_is_kept_alive(start_server):
    """A streamed request waiting behind another (concurrency 1: one request
    at a time) must not stay silent."""
    import threading

    args = ["--keepalive-interval", "0.3", "--quantized-kv-start", "0", "--concurrency", "1"]
    with start_server(args=args) as srv:
        url = srv.base_url + "/chat/completions"
        hello = [{"role": "user", "content": "hi"}]
        busy = threading.Thread(
            target=requests.post,
            args=(url,),
            kwargs={"timeout": 120, "json": {"messages": hello, "x_mns_script": "busy " * 500}},
        )
        busy.start()
        time.sleep(0.5)
        lines = []
        with requests.post(
            url, json={"messages": hello, "stream": True, "max_tokens": 3}, stream=True, timeout=120
        ) as r:
            assert r.status_code == 200
            for raw in r.iter_lines(decode_unicode=True):
                lines.append(raw)
        busy.join(120)
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert any(line.startswith(":") for line in lines[:first_data]), lines[:5]
    assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"


def test_a_client_that_leaves_during_the_prefill_stops_it(start_server):
    """Regression: upstream only checks for a stop between generated tokens."""
    prompt = " ".join(f"item{i} of a long prompt" for i in range(700))
    with start_server(args=["--prefill-step-size", "64", "--quantized-kv-start", "0"]) as srv:
        url = srv.base_url + "/chat/completions"
        with requests.post(
            url,
            stream=True,
            timeout=60,
            json={
                "messages": [{"role": "user", "content": prompt}],
                "stream": True,
                "max_tokens": 5,
            },
        ) as r:
            assert r.status_code == 200
            time.sleep(1.0)
        deadline = time.monotonic() + 60
        while "client left during the prefill" not in srv.app_log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "client left during the prefill" in srv.app_log()
        assert requests.get(srv.root_url + "/health", timeout=10).status_code == 200
        assert (
            requests.post(
                url,
                timeout=60,
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            ).status_code
            == 200
        )
        assert "Traceback" not in srv.app_log()
