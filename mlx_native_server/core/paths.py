"""One object that knows every path the project reads or writes.

MLX_NATIVE_SERVER_HOME moves them all (the project directory by default),
which is also what keeps tests hermetic.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
SERVICE_LABEL = "com.local.mlx-native-server"
STDOUT_LOG = "stdout.log"  # what a service manager captures (launchd, systemd)
STDERR_LOG = "stderr.log"
SERVICE_UNIT = "mlx-native-server.service"


# Settings a server of its own keeps from its parent: where the venv is and
# which mlx backend it has, not the configuration.
# The venv, the backend, and the BLAS this process preloaded (core/blas.py:
# LD_PRELOAD is inherited with it).
_KEPT = ("MLX_NATIVE_SERVER_VENV", "MLX_NATIVE_SERVER_BACKEND", "MLX_NATIVE_SERVER_BLAS_PRELOADED")


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a server of its own under `home` (tests,
    benchmarks): no inherited MLX_NATIVE_SERVER_* configuration, test hooks on,
    Hugging Face offline."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MLX_NATIVE_SERVER_") or k in _KEPT
    }
    env.update(
        MLX_NATIVE_SERVER_HOME=str(home),
        MLX_NATIVE_SERVER_TEST_HOOKS="1",
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class Paths:
    home: Path
    config_file: Path
    log_dir: Path
    # The login service's files live under the user's home, not the project:
    # $HOME (and XDG_CONFIG_HOME) move them, which keeps service tests hermetic.
    user_home: Path = dataclasses.field(default_factory=Path.home)
    xdg_config_home: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Paths:
        environ = os.environ if environ is None else environ
        home = Path(environ.get("MLX_NATIVE_SERVER_HOME") or PROJECT_DIR).resolve()
        config = environ.get("MLX_NATIVE_SERVER_CONFIG")
        config_file = Path(config).resolve() if config else home / "server.toml"
        xdg = environ.get("XDG_CONFIG_HOME")
        return cls(
            home=home,
            config_file=config_file,
            log_dir=home / "logs",
            user_home=Path(environ.get("HOME") or Path.home()),
            xdg_config_home=Path(xdg) if xdg else None,
        )

    def resolve(self, path: str | os.PathLike) -> Path:
        """A user path: absolute as given, relative to the project home."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.home / p

    def with_log_dir(self, log_dir: str | os.PathLike) -> Paths:
        return dataclasses.replace(self, log_dir=self.resolve(log_dir))

    @property
    def project_dir(self) -> Path:
        """Where the scripts live (not moved by MLX_NATIVE_SERVER_HOME)."""
        return PROJECT_DIR

    @property
    def models_dir(self) -> Path:
        return self.home / "local-models"

    @property
    def mlx_kernels_dir(self) -> Path:
        """Where mlx's CUDA backend keeps the kernels it compiles (engine.keep_compiled_kernels)."""
        return self.models_dir / ".mlx-kernels"

    @property
    def demo_model(self) -> Path:
        return self.models_dir / "demo"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def pid_file(self, port: int) -> Path:
        return self.run_dir / f"server-{port}.pid"

    @property
    def app_log(self) -> Path:
        return self.log_dir / "app.log"

    @property
    def stdout_log(self) -> Path:
        return self.log_dir / STDOUT_LOG

    @property
    def stderr_log(self) -> Path:
        return self.log_dir / STDERR_LOG

    @property
    def cache_dir(self) -> Path:
        return self.home / "local-models" / ".prompt-cache"

    @property
    def mlx_lm_repo(self) -> Path:
        return self.home / "mlx-lm-repo"

    @property
    def patches_dir(self) -> Path:
        return PROJECT_DIR / "patches"

    @property
    def plist_template(self) -> Path:
        return PROJECT_DIR / f"{SERVICE_LABEL}.plist.template"

    @property
    def launchd_plist(self) -> Path:
        """The launchd login service: ~/Library/LaunchAgents/<label>.plist."""
        return self.user_home / "Library" / "LaunchAgents" / f"{SERVICE_LABEL}.plist"

    @property
    def systemd_unit(self) -> Path:
        """The systemd user unit: ~/.config/systemd/user/mlx-native-server.service."""
        config = self.xdg_config_home or self.user_home / ".config"
        return config / "systemd" / "user" / SERVICE_UNIT

    @property
    def venv(self) -> Path:
        return Path(os.environ.get("MLX_NATIVE_SERVER_VENV") or PROJECT_DIR / ".venv")
