"""Where mlx's CUDA backend keeps the kernels it compiles: local-models/,
one directory per mlx version, unless MLX_PTX_CACHE_DIR names another
(engine.keep_compiled_kernels; a reboot empties mlx's default, $TMPDIR)."""

from __future__ import annotations

import mlx.core as mx

from mlx_native_server.core.paths import Paths
from mlx_native_server.engine import engine


def test_compiled_kernels_go_under_local_models_by_mlx_version(tmp_path):
    environ: dict[str, str] = {}
    paths = Paths(home=tmp_path, config_file=tmp_path / "server.toml", log_dir=tmp_path / "logs")
    where = engine.keep_compiled_kernels(paths.mlx_kernels_dir, environ)
    assert where == str(tmp_path / "local-models" / ".mlx-kernels" / mx.__version__)
    assert environ[engine.KERNEL_CACHE] == where


def test_a_directory_the_user_names_is_kept(tmp_path):
    environ = {engine.KERNEL_CACHE: "/srv/kernels"}
    assert engine.keep_compiled_kernels(tmp_path, environ) == "/srv/kernels"
    assert environ == {engine.KERNEL_CACHE: "/srv/kernels"}
