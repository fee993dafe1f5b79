"""Checks made before loading a model, each failing with one sentence."""

from __future__ import annotations

import ipaddress
import os
import stat

from . import filemodes
from .config import KEYS_BY_NAME, Settings
from .errors import UserError
from .ports import port_is_free, read_pid, who_listens


def _origin(settings: Settings, key: str) -> str:
    origin = settings.origin(key)
    return "the default" if origin == "default" else origin


def check_model(settings: Settings) -> None:
    """The model dir exists and looks like an MLX model."""
    path = settings.model_path
    where = f"model '{settings.model}' ({_origin(settings, 'model')})"
    ways = (
        "Run ./convert-model.sh <hf-repo> to make it, point --model "
        "(or model in server.toml) at an MLX model directory, or try "
        "./start-server.sh --model demo."
    )
    if not path.is_dir():
        raise UserError(f"{where} not found at {path}. {ways}")
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise UserError(
            f"{where} at {path} is not an MLX model (it needs config.json "
            f"and *.safetensors). {ways}"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_security(settings: Settings) -> None:
    """Serving beyond this machine needs an API key."""
    if not is_loopback(settings.host) and not settings.api_key:
        raise UserError(
            f"host {settings.host} ({_origin(settings, 'host')}) would serve other "
            "machines without an API key; set api_key_file (or MLX_NATIVE_SERVER_API_KEY) "
            "or bind to 127.0.0.1."
        )


FLAG_KEY_WARNING = (
    "the API key given with --api-key is visible to every local user in `ps`; "
    "put it in api_key_file or MLX_NATIVE_SERVER_API_KEY instead"
)


def key_warnings(settings: Settings) -> list[str]:
    """One line for each way the API key is exposed to other local users
    (warnings: the server still starts)."""
    out = []
    if settings.origin("api_key") == f"set by {KEYS_BY_NAME['api_key'].flag}":
        out.append(FLAG_KEY_WARNING)
    if settings.api_key_file:
        path = settings.paths.resolve(settings.api_key_file)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:  # read a moment ago; gone now is not ours to report
            mode = 0
        if mode & filemodes.OTHERS:
            out.append(
                f"api_key_file {path} is readable by other users (mode 0{mode:o}); "
                f"run chmod 600 {path}"
            )
    return out


def check_port(settings: Settings) -> None:
    """The port is free, else name who holds it (plainly if it is ours)."""
    port = settings.port
    if port_is_free(settings.host, port):
        return
    ours = read_pid(settings.paths.pid_file(port))
    holder = who_listens(port)
    if ours is not None and (holder is None or holder.pid == ours):
        raise UserError(
            f"mlx-native-server is already running on port {port} (pid {ours}); "
            f"stop it with ./stop-server.sh --port {port}, or pick another --port."
        )
    who = holder.describe() if holder else "another process"
    if holder and "mlx_native_server" in holder.command:
        raise UserError(
            f"port {port} is held by another mlx-native-server ({who}); stop it "
            f"with ./stop-server.sh --port {port}, or pick another --port."
        )
    raise UserError(
        f"port {port} ({_origin(settings, 'port')}) is in use by {who}; "
        "stop that process or pick another --port."
    )
