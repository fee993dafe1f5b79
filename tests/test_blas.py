"""The CPU BLAS choice (core/blas.py): which library, when the process
re-executes itself with it preloaded, and what /status and the log say."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

from mlx_native_server.core import blas

DEBIAN = blas.KNOWN[0]


def test_it_applies_to_linux_on_the_cpu_backend_only():
    assert blas.applies({}, "linux")
    assert blas.applies({"MLX_NATIVE_SERVER_BACKEND": "cpu"}, "linux")
    assert not blas.applies({"MLX_NATIVE_SERVER_BACKEND": "cuda13"}, "linux")
    assert not blas.applies({}, "darwin")


def test_auto_takes_the_first_known_openblas_that_exists():
    assert blas.choose("auto", lambda p: p == blas.KNOWN[2]) == blas.KNOWN[2]
    assert blas.choose("auto", lambda p: True) == DEBIAN
    assert blas.choose("auto", lambda p: False) is None
    assert blas.choose("bundled", lambda p: True) is None
    assert blas.choose("/opt/blas/libblas.so", lambda p: False) == "/opt/blas/libblas.so"


def test_the_setting_must_be_auto_bundled_or_a_file(tmp_path):
    lib = tmp_path / "libblas.so"
    lib.write_bytes(b"")
    assert blas.valid("auto") and blas.valid("bundled") and blas.valid(str(lib))
    assert not blas.valid(str(tmp_path / "missing.so"))


def test_a_bad_setting_is_refused_with_the_choices(tmp_path):
    from mlx_native_server.core import config
    from mlx_native_server.core.errors import UserError
    from mlx_native_server.core.paths import Paths

    env = {"MLX_NATIVE_SERVER_CPU_BLAS": str(tmp_path / "none.so")}
    with pytest.raises(UserError, match="auto, bundled or the path of a BLAS library"):
        config.load({}, env, Paths.from_env({"MLX_NATIVE_SERVER_HOME": str(tmp_path)}))


class _Exec(Exception):
    pass


def _capture(monkeypatch) -> dict:
    seen: dict = {}

    def execve(path, argv, env):
        seen.update(path=path, argv=argv, env=env)
        raise _Exec

    monkeypatch.setattr(blas.os, "execve", execve)
    monkeypatch.setattr(blas.sys, "platform", "linux")
    return seen


def test_preload_reexecutes_once_with_the_library_first(monkeypatch, tmp_path):
    seen = _capture(monkeypatch)
    lib = str(tmp_path / "libblas.so")
    with pytest.raises(_Exec):
        blas.preload(lib, {"LD_PRELOAD": "/other.so", "PATH": "/bin"})
    assert seen["path"] == sys.executable
    assert seen["argv"] == [sys.executable, *sys.orig_argv[1:]]
    assert seen["env"]["LD_PRELOAD"] == f"{lib} /other.so"
    assert seen["env"][blas.PRELOADED] == lib and seen["env"]["PATH"] == "/bin"
    # the second run, or a setting that keeps mlx's own, does not re-execute
    blas.preload(lib, seen["env"])
    blas.preload("bundled", {})
    blas.preload(lib, {"MLX_NATIVE_SERVER_BACKEND": "cuda13"})


def test_describe_names_the_library_or_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(blas, "_mapped", lambda library: library != "/opt/bad.so")
    assert blas.describe({blas.PRELOADED: DEBIAN}) == f"OpenBLAS ({DEBIAN})"
    assert blas.describe({blas.PRELOADED: "/opt/x.so"}) == "preloaded /opt/x.so"
    failed = blas.describe({blas.PRELOADED: "/opt/bad.so"})
    assert failed.startswith(
        "mlx's bundled reference BLAS (slow: the preload of /opt/bad.so failed"
    )
    assert blas.reference({blas.PRELOADED: "/opt/bad.so"})
    assert blas.reference({}) and not blas.reference({blas.PRELOADED: DEBIAN})
    bundled = blas.describe({})
    assert "reference BLAS" in bundled and "libopenblas0-pthread" in bundled
    assert "CUDA" in blas.describe({"MLX_NATIVE_SERVER_BACKEND": "cuda13"})


def _bundled_blas() -> Path | None:
    """mlx's own reference BLAS (Linux CPU wheel): harmless to preload again."""
    import mlx.core

    libs = Path(mlx.core.__file__).resolve().parent.parent / "mlx_cpu.libs"
    return next(iter(sorted(libs.glob("libblas*.so*"))), None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux CPU only")
def test_the_server_runs_with_the_library_preloaded_and_says_so(start_server, tmp_path):
    lib = _bundled_blas()
    assert lib is not None, "mlx's CPU wheel ships libblas in mlx_cpu.libs"
    with start_server(args=["--cpu-blas", str(lib)]) as srv:
        status = requests.get(srv.root_url + "/status", timeout=10).json()
        assert status["cpu_blas"] == f"preloaded {lib}"
        environ = Path(f"/proc/{srv.pid}/environ").read_bytes().split(b"\0")
        assert f"LD_PRELOAD={lib}".encode() in environ
        assert f"CPU BLAS: preloaded {lib}" in srv.app_log()
    not_a_library = tmp_path / "libnot.so"  # a file the dynamic loader cannot preload
    not_a_library.write_text("not ELF\n")
    with start_server(args=["--cpu-blas", str(not_a_library)]) as srv:
        status = requests.get(srv.root_url + "/status", timeout=10).json()
        assert f"the preload of {not_a_library} failed" in status["cpu_blas"]
    with start_server(args=["--cpu-blas", "bundled"]) as srv:
        status = requests.get(srv.root_url + "/status", timeout=10).json()
        assert status["cpu_blas"].startswith("mlx's bundled reference BLAS")
        assert "libopenblas0-pthread" in srv.app_log()
