"""The login service's files, rendered from plain data (pure, no I/O).

launchd: `com.local.mlx-native-server.plist.template` at the root is a real
plist whose strings hold `__PLACEHOLDERS__`; it is parsed with plistlib,
filled from a dict and written with plistlib. systemd: the unit is a list
of (section, key, value) lines. Both restart on failure only, so a clean
stop (exit 0 after SIGTERM) stays stopped.
"""

from __future__ import annotations

import plistlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.paths import STDERR_LOG, STDOUT_LOG

RESTART_DELAY = 10  # seconds between a crash and the restart (ThrottleInterval, RestartSec)
START_LIMIT = (5, 300)  # systemd gives up after 5 starts in 300 s (a crash loop)
STOP_GRACE_MARGIN = 20  # seconds past shutdown_timeout before SIGKILL (cancel + exit)
# launchd starts jobs with PATH=/usr/bin:/bin:/usr/sbin:/sbin; add Homebrew's.
BASE_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
API_KEY_ENV = "MLX_NATIVE_SERVER_API_KEY"
HEADER = (
    "# Written by ./install-service.sh (mlx-native-server); run it again to "
    "change this file. See SERVICE.md."
)


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs and where: everything the files need."""

    repo_dir: Path
    python: Path
    log_dir: Path
    args: tuple[str, ...] = ()  # the flags given to install-service, replayed at each start
    environment: tuple[tuple[str, str], ...] = ()  # e.g. MLX_NATIVE_SERVER_HOME
    stop_grace: int = 30  # seconds from SIGTERM to SIGKILL

    @property
    def holds_key(self) -> bool:
        """The rendered file would hold the API key (a recorded --api-key, or the
        key in its environment), so it must be readable by the user only.
        --api-key-file records the file's path, not the key."""
        flags = self.args[0::2]  # (flag, value) pairs, as install-service records them
        return "--api-key" in flags or any(k == API_KEY_ENV for k, _ in self.environment)

    @property
    def program(self) -> list[str]:
        return [str(self.python), "-m", "mlx_native_server", "serve", *self.args]

    @property
    def path(self) -> str:
        return f"{self.python.parent}:{BASE_PATH}"

    def placeholders(self) -> dict[str, str]:
        return {
            "__REPO_DIR__": str(self.repo_dir),
            "__PYTHON__": str(self.python),
            "__LOG_DIR__": str(self.log_dir),
            "__PATH__": self.path,
        }


def stop_grace(shutdown_timeout: float) -> int:
    """Seconds a service manager waits after SIGTERM: the drain plus a margin."""
    return int(shutdown_timeout + 0.999) + STOP_GRACE_MARGIN


def fill(value: Any, mapping: dict[str, str]) -> Any:
    """`value` with every placeholder in its strings replaced (recursively)."""
    if isinstance(value, str):
        for key, replacement in mapping.items():
            value = value.replace(key, replacement)
        return value
    if isinstance(value, dict):
        return {k: fill(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, mapping) for v in value]
    return value


def plist_dict(template: dict, spec: ServiceSpec) -> dict:
    """The launchd job: the template filled in, plus the recorded flags."""
    plist = fill(template, spec.placeholders())
    plist["ProgramArguments"] = list(plist["ProgramArguments"]) + list(spec.args)
    plist["EnvironmentVariables"] = {**plist["EnvironmentVariables"], **dict(spec.environment)}
    plist["ExitTimeOut"] = spec.stop_grace
    return plist


def render_plist(template_bytes: bytes, spec: ServiceSpec) -> bytes:
    return plistlib.dumps(plist_dict(plistlib.loads(template_bytes), spec), sort_keys=False)


def recorded_args_from_plist(content: bytes) -> list[str]:
    """The flags an installed plist replays (those after `serve`)."""
    program = plistlib.loads(content).get("ProgramArguments", [])
    return list(program[program.index("serve") + 1 :]) if "serve" in program else []


def _unescape_specifiers(text: str) -> str:
    return text.replace("%%", "%")


def exec_quote(arg: str) -> str:
    """One ExecStart= word: systemd expands % specifiers and $VARS, and
    splits on whitespace unless double-quoted."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def env_quote(name: str, value: str) -> str:
    """One Environment= assignment, quoted ($ is literal there, % is not)."""
    text = f"{name}={value}".replace("%", "%%")
    if not any(c.isspace() or c in "\"'\\" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_lines(spec: ServiceSpec) -> list[tuple[str, str, str]]:
    """The systemd user unit as (section, key, value) lines, in order."""
    env = [("PATH", spec.path), ("PYTHONUNBUFFERED", "1"), *spec.environment]
    return [
        (
            "Unit",
            "Description",
            "mlx-native-server: OpenAI- and Anthropic-compatible MLX model server",
        ),
        ("Unit", "StartLimitIntervalSec", str(START_LIMIT[1])),
        ("Unit", "StartLimitBurst", str(START_LIMIT[0])),
        ("Service", "Type", "simple"),
        ("Service", "WorkingDirectory", str(spec.repo_dir).replace("%", "%%")),
        *[("Service", "Environment", env_quote(k, v)) for k, v in env],
        ("Service", "ExecStart", " ".join(exec_quote(a) for a in spec.program)),
        ("Service", "Restart", "on-failure"),
        ("Service", "RestartSec", str(RESTART_DELAY)),
        # SIGTERM to the server alone; SIGKILL to what is left after the grace.
        ("Service", "KillMode", "mixed"),
        ("Service", "TimeoutStopSec", str(spec.stop_grace)),
        (
            "Service",
            "StandardOutput",
            "append:" + str(spec.log_dir / STDOUT_LOG).replace("%", "%%"),
        ),
        ("Service", "StandardError", "append:" + str(spec.log_dir / STDERR_LOG).replace("%", "%%")),
        ("Install", "WantedBy", "default.target"),
    ]


def render_unit(spec: ServiceSpec) -> bytes:
    out, section = [HEADER], None
    for sect, key, value in unit_lines(spec):
        if sect != section:
            out += ["", f"[{sect}]"] if section else [f"[{sect}]"]
            section = sect
        out.append(f"{key}={value}")
    return ("\n".join(out) + "\n").encode()


def unit_value(content: bytes, key: str) -> str | None:
    """The first `key=` value of a unit file."""
    for line in content.decode().splitlines():
        if line.startswith(key + "="):
            return line[len(key) + 1 :]
    return None


def recorded_args_from_unit(content: bytes) -> list[str]:
    """The flags an installed unit replays (those after `serve`)."""
    exec_start = unit_value(content, "ExecStart")
    if exec_start is None:
        return []
    words = [_unescape_specifiers(w).replace("$$", "$") for w in shlex.split(exec_start)]
    return words[words.index("serve") + 1 :] if "serve" in words else []
