"""Local file security: the prompt cache, the logs and service files holding
the API key are for their user only (0700 directories, 0600 files, whatever
the umask), and the key can come from api_key_file instead of a flag that
every local user sees in `ps`."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache

from fakes.harness import FakeServices
from mlx_native_server.cache import disk as disk_cache
from mlx_native_server.cache.disk import DiskTier
from mlx_native_server.core import config, filemodes, logsetup, preflight
from mlx_native_server.core.errors import UserError
from mlx_native_server.core.logrotate import StreamLogs
from mlx_native_server.core.paths import Paths
from mlx_native_server.service.render import ServiceSpec

COMPAT = {
    "fingerprint": "f" * 64,
    "mlx_lm_version": "0.0",
    "kv_bits": 0,
    "kv_group_size": 64,
    "quantized_kv_start": 0,
}
OPEN_UMASK = 0o000  # the worst umask: anything left to it would come out world-writable


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def small_kv(n: int = 8) -> list:
    cache = [KVCache() for _ in range(2)]
    for c in cache:
        x = mx.ones((1, 2, n, 64), dtype=mx.float16)
        c.update_and_fetch(x, x)
    return cache


def settings_at(
    home: Path, toml: str = "", flags: dict | None = None, environ: dict | None = None
) -> config.Settings:
    (home / "server.toml").write_text(toml)
    return config.load(
        flags or {}, environ or {}, Paths.from_env({"MLX_NATIVE_SERVER_HOME": str(home)})
    )


# ---- the prompt cache ------------------------------------------------------


def test_prompt_cache_dir_is_0700_and_files_0600(tmp_path, monkeypatch):
    seen, save_prompt_cache = [], disk_cache.save_prompt_cache

    def save_and_look(path, *args):  # the temp file as mlx starts to write it
        seen.append(mode(Path(path)) if Path(path).exists() else None)
        return save_prompt_cache(path, *args)

    monkeypatch.setattr(disk_cache, "save_prompt_cache", save_and_look)
    root = tmp_path / "models" / ".prompt-cache"
    with umask(OPEN_UMASK):
        disk = DiskTier(root, COMPAT, 1 << 30)
        assert disk.write(list(range(8)), small_kv(), session="s")
    assert seen == [0o600]  # private before the first byte of the entry
    assert mode(root) == 0o700
    files = list(root.iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"
    assert mode(files[0]) == 0o600


def test_existing_prompt_cache_dir_and_old_entries_are_tightened(tmp_path):
    root = tmp_path / "cache"
    DiskTier(root, COMPAT, 1 << 30).write(list(range(8)), small_kv())
    (entry,) = root.iterdir()
    os.chmod(root, 0o755)  # as an older version left them
    os.chmod(entry, 0o644)
    reopened = DiskTier(root, COMPAT, 1 << 30)
    assert mode(root) == 0o700 and mode(entry) == 0o600
    assert reopened.stats()["entries"] == 1  # still a usable entry


# ---- logs ------------------------------------------------------------------


@pytest.fixture
def root_logging():
    """logsetup.setup replaces the root logger's handlers: put pytest's back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_app_log_and_its_rotated_copies_are_0600_in_a_new_0700_dir(tmp_path, root_logging):
    s = settings_at(
        tmp_path, flags={"log_dir": "var/logs", "log_max_bytes": "300", "log_backups": "2"}
    )
    with umask(OPEN_UMASK):
        logsetup.setup(s, terminal=False)
        for i in range(40):  # about 70 bytes a line: several rotations
            logging.getLogger("mlx_native_server.test").warning("request summary %d", i)
    logs = tmp_path / "var" / "logs"
    names = sorted(p.name for p in logs.iterdir())
    assert names == ["app.log", "app.log.1", "app.log.2"]
    assert mode(logs) == 0o700
    assert {n: mode(logs / n) for n in names} == dict.fromkeys(names, 384)


def test_an_existing_log_dir_keeps_its_mode_and_old_logs_are_tightened(tmp_path, root_logging):
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    os.chmod(logs, 0o755)
    for name in ("app.log", "app.log.1"):
        (logs / name).write_text("older\n")
        os.chmod(logs / name, 0o644)
    logsetup.setup(settings_at(tmp_path), terminal=False)
    logging.getLogger("mlx_native_server.test").warning("hello")
    assert mode(logs) == 0o755  # the user's directory: not ours to change
    assert mode(logs / "app.log") == 0o600 and mode(logs / "app.log.1") == 0o600
    assert (logs / "app.log").read_text().startswith("older\n")  # appended, not replaced


def test_stdout_and_stderr_logs_and_their_rotations_are_0600(tmp_path):
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with umask(OPEN_UMASK):
        for path in (out, err):
            path.write_text("x" * 400)  # as a service manager created them
            os.chmod(path, 0o666)
        (tmp_path / "stdout.log.1").write_text("an older copy\n")
        os.chmod(tmp_path / "stdout.log.1", 0o644)
        logs = StreamLogs(out, err, max_bytes=300, backups=2)
        logs.adopt()
        assert logs.rotate() == [out, err]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["stderr.log", "stderr.log.1", "stdout.log", "stdout.log.1", "stdout.log.2"]
    assert {n: mode(tmp_path / n) for n in names} == dict.fromkeys(names, 384)
    assert (tmp_path / "stdout.log.1").read_text() == "x" * 400
    assert (tmp_path / "stdout.log.2").read_text() == "an older copy\n"


# ---- the API key -------------------------------------------------------------


def test_api_key_file_gives_settings_api_key(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_text("  s3cret-key \nsecond line ignored\n")
    s = settings_at(tmp_path, 'api_key_file = "secrets/key"\n')
    assert s.api_key == "s3cret-key"
    assert s.origin("api_key") == f"read from {tmp_path / 'secrets' / 'key'} (api_key_file)"
    text = config.describe(s)
    assert "s3cret" not in text and "'(set)'" in text
    assert "api_key_file" in text and "'secrets/key'" in text


def test_api_key_from_the_environment_needs_no_file(tmp_path):
    s = settings_at(tmp_path, environ={"MLX_NATIVE_SERVER_API_KEY": "k"})
    assert s.api_key == "k" and preflight.key_warnings(s) == []


def test_missing_api_key_file_is_a_user_error_naming_it(tmp_path):
    with pytest.raises(UserError) as e:
        settings_at(tmp_path, flags={"api_key_file": "nope.txt"})
    msg = str(e.value)
    assert f"{tmp_path / 'nope.txt'} does not exist" in msg
    assert "(set by --api-key-file)" in msg and "umask 077" in msg


def test_empty_or_unreadable_api_key_file_is_a_user_error(tmp_path):
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UserError, match="first line of .*empty is empty; it must be the API key"):
        settings_at(tmp_path, environ={"MLX_NATIVE_SERVER_API_KEY_FILE": "empty"})
    (tmp_path / "a-dir").mkdir()  # unreadable as a file, even for root
    with pytest.raises(UserError, match="cannot read .*a-dir"):
        settings_at(tmp_path, flags={"api_key_file": "a-dir"})


def test_api_key_and_api_key_file_together_are_refused(tmp_path):
    (tmp_path / "key").write_text("from-file\n")
    both = (
        r"api_key \(set by MLX_NATIVE_SERVER_API_KEY\) and "
        r"api_key_file = 'key' \(set in server.toml\) are both set"
    )
    with pytest.raises(UserError, match=both):
        settings_at(tmp_path, 'api_key_file = "key"\n', environ={"MLX_NATIVE_SERVER_API_KEY": "x"})


def test_api_key_flag_warns_that_ps_shows_it(tmp_path):
    assert preflight.key_warnings(settings_at(tmp_path, flags={"api_key": "k"})) == [
        preflight.FLAG_KEY_WARNING
    ]
    assert preflight.key_warnings(settings_at(tmp_path, 'api_key = "k"\n')) == []


def test_a_key_file_others_can_read_is_warned_about(tmp_path):
    key = tmp_path / "key"
    key.write_text("k\n")
    os.chmod(key, 0o644)
    (warning,) = preflight.key_warnings(settings_at(tmp_path, flags={"api_key_file": "key"}))
    assert f"run chmod 600 {key}" in warning
    os.chmod(key, 0o600)
    assert preflight.key_warnings(settings_at(tmp_path, flags={"api_key_file": "key"})) == []


def test_start_with_the_api_key_flag_warns_once_on_stderr(demo_model, tmp_path, script):
    with socket.socket() as busy:  # the start stops at the port check, after the warning
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = script(
            "start-server.sh",
            "--model",
            str(demo_model),
            "--port",
            str(port),
            "--api-key",
            "sekret",
            home=tmp_path,
        )
    assert r.returncode == 1 and f"port {port}" in r.stderr
    assert r.stderr.count(preflight.FLAG_KEY_WARNING) == 1, r.stderr
    assert "sekret" not in r.stderr


# ---- service files -------------------------------------------------------------


@pytest.fixture(params=["launchd", "systemd"])
def fake(request, tmp_path):
    f = FakeServices(tmp_path, request.param)
    yield f
    f.cleanup()


def test_service_file_with_the_key_is_0600(fake, demo_model):
    with umask(OPEN_UMASK):
        r = fake.install(demo_model, "--api-key", "sekret")
    assert r.returncode == 0, r.stderr
    assert f"warning: {preflight.FLAG_KEY_WARNING}" in r.stderr
    assert b"sekret" in fake.file.read_bytes() and mode(fake.file) == 0o600
    assert not [p for p in fake.file.parent.iterdir() if p.name.endswith(".tmp")]


def test_service_file_without_a_key_keeps_0644(fake, demo_model):
    with umask(OPEN_UMASK):
        r = fake.install(demo_model)
    assert r.returncode == 0, r.stderr
    assert mode(fake.file) == 0o644


def test_service_with_api_key_file_records_the_path_not_the_key(fake, demo_model):
    key = fake.home / "secrets" / "api-key"
    key.parent.mkdir()
    key.write_text("sekret\n")
    os.chmod(key, 0o600)
    r = fake.install(demo_model, "--api-key-file", "secrets/api-key")
    assert r.returncode == 0, r.stderr
    content = fake.file.read_bytes()
    assert b"sekret" not in content and b"secrets/api-key" in content
    assert mode(fake.file) == 0o644 and "warning" not in r.stderr


def test_install_makes_the_service_logs_0600_in_a_new_0700_dir(fake, demo_model):
    with umask(OPEN_UMASK):
        r = fake.install(demo_model)
    assert r.returncode == 0, r.stderr
    logs = fake.home / "logs"
    assert mode(logs) == 0o700
    assert mode(logs / "stdout.log") == 0o600 and mode(logs / "stderr.log") == 0o600


def test_service_spec_holds_the_key_only_when_its_file_does():
    spec = ServiceSpec(
        repo_dir=Path("/r"),
        python=Path("/r/.venv/bin/python"),
        log_dir=Path("/r/logs"),
        args=("--port", "8001"),
    )
    assert not spec.holds_key
    assert ServiceSpec(**{**spec.__dict__, "args": ("--api-key", "k")}).holds_key
    assert not ServiceSpec(**{**spec.__dict__, "args": ("--api-key-file", "f")}).holds_key
    assert not ServiceSpec(**{**spec.__dict__, "args": ("--model", "--api-key")}).holds_key
    assert ServiceSpec(
        **{**spec.__dict__, "environment": (("MLX_NATIVE_SERVER_API_KEY", "k"),)}
    ).holds_key


def test_atomic_write_sets_the_mode_whatever_the_umask(tmp_path):
    target = tmp_path / "unit"
    with umask(OPEN_UMASK):
        filemodes.write_atomic(target, b"secret", filemodes.PRIVATE_FILE)
        assert mode(target) == 0o600
        filemodes.write_atomic(target, b"public", 0o644)
        assert mode(target) == 0o644 and target.read_bytes() == b"public"
    assert [p.name for p in tmp_path.iterdir()] == ["unit"]
