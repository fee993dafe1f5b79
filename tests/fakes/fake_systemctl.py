"""`systemctl --user` as the tests need it: daemon-reload, enable/disable
[--now], start, stop, restart, is-active, show, reset-failed, status."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import fakesvc


def _err(text: str, code: int) -> int:
    print(text, file=sys.stderr)
    return code


def unit_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.environ["HOME"], ".config")
    return Path(config) / "systemd" / "user"


def parse_unit(path: Path) -> dict:
    """The keys the fake acts on: ExecStart, WorkingDirectory, Environment, logs, Restart."""
    env, values = {}, {}
    for line in path.read_text().splitlines():
        if "=" not in line or line.startswith(("#", "[")):
            continue
        key, value = line.split("=", 1)
        if key == "Environment":
            for word in fakesvc.split_exec(value):
                k, v = word.split("=", 1)
                env[k] = v
        else:
            values.setdefault(key, value)
    out = values.get("StandardOutput", "journal")
    err = values.get("StandardError", "inherit")
    return {
        "manager": "systemd",
        "path": str(path),
        "argv": fakesvc.split_exec(values["ExecStart"]),
        "env": env,
        "cwd": values.get("WorkingDirectory", os.environ["HOME"]).replace("%%", "%"),
        "stdout": out.split(":", 1)[1] if out.startswith("append:") else "/dev/null",
        "stderr": err.split(":", 1)[1] if err.startswith("append:") else "/dev/null",
        "restart_on_failure": values.get("Restart") in ("on-failure", "always"),
    }


def _load(unit: str) -> dict | None:
    """The unit as systemd knows it: loaded on demand from its file."""
    j = fakesvc.job(unit)
    if j is not None:
        return j
    path = unit_dir() / unit
    if not path.exists():
        return None
    with fakesvc.locked() as state:
        state["jobs"][unit] = {
            **parse_unit(path),
            "pid": None,
            "running": False,
            "last_exit": None,
            "runs": 0,
            "state": "dead",
        }
        return state["jobs"][unit]


def _daemon_reload() -> int:
    with fakesvc.locked() as state:
        for name, j in list(state["jobs"].items()):
            path = unit_dir() / name
            if path.exists():
                keep = {
                    k: j[k]
                    for k in (
                        "pid",
                        "running",
                        "last_exit",
                        "runs",
                        "state",
                        "supervisor",
                        "stop_requested",
                    )
                    if k in j
                }
                state["jobs"][name] = {**parse_unit(path), **keep}
            elif not j.get("running"):
                del state["jobs"][name]
    return 0


def _wants_link(unit: str) -> Path:
    return unit_dir() / "default.target.wants" / unit


def _active_state(j: dict | None) -> tuple[str, str]:
    if j is None:
        return "inactive", "dead"
    if j.get("running"):
        return "active", "running"
    return {
        "auto-restart": ("activating", "auto-restart"),
        "failed": ("failed", "failed"),
        "starting": ("activating", "start"),
    }.get(j.get("state", "dead"), ("inactive", "dead"))


def _show(unit: str, props: list[str], value_only: bool) -> int:
    j = _load(unit)
    active, sub = _active_state(j)
    last = j.get("last_exit") if j else None
    values = {
        "LoadState": "loaded" if j else "not-found",
        "ActiveState": active,
        "SubState": sub,
        "MainPID": str(j["pid"] if j and j.get("running") else 0),
        "ExecMainCode": "0" if last is None else ("2" if last < 0 else "1"),
        "ExecMainStatus": "0" if last is None else str(abs(last)),
        "UnitFileState": "enabled" if _wants_link(unit).exists() else "disabled",
    }
    for p in props or list(values):
        print(values.get(p, "") if value_only else f"{p}={values.get(p, '')}")
    return 0


def _stop(unit: str) -> int:
    j = _load(unit)
    if j is None:
        return _err(f"Failed to stop {unit}: Unit {unit} not loaded.", 5)
    fakesvc.stop_job(unit)
    return 0


def _start(unit: str) -> int:
    j = _load(unit)
    if j is None:
        return _err(f"Failed to start {unit}: Unit {unit} not found.", 5)
    if not j.get("running"):
        fakesvc.spawn_supervisor(unit)
    return 0


def _enable(unit: str, now: bool) -> int:
    if not (unit_dir() / unit).exists():
        return _err(f"Failed to enable unit: Unit file {unit} does not exist.", 1)
    link = _wants_link(unit)
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(unit_dir() / unit)
        print(f"Created symlink {link} → {unit_dir() / unit}.", file=sys.stderr)
    return _start(unit) if now else 0


def _disable(unit: str, now: bool) -> int:
    link = _wants_link(unit)
    if link.is_symlink():
        link.unlink()
        print(f'Removed "{link}".', file=sys.stderr)
    return _stop(unit) if now and _load(unit) is not None else 0


def main(argv: list[str]) -> int:
    if "--user" not in argv:
        return _err("fake systemctl: only --user is faked", 64)
    if os.environ.get("FAKE_SYSTEMD_NO_BUS") == "1":
        return _err("Failed to connect to bus: No medium found", 1)
    args = [a for a in argv if a != "--user"]
    props, value_only, words = [], False, []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--property="):
            props += a.split("=", 1)[1].split(",")
        elif a in ("-p", "--property"):
            i += 1
            props += args[i].split(",")
        elif a == "--value":
            value_only = True
        else:
            words.append(a)
        i += 1
    cmd, rest = words[0], words[1:]
    now = "--now" in rest
    units = [w for w in rest if not w.startswith("-")]
    if cmd == "daemon-reload":
        return _daemon_reload()
    if cmd == "show":
        return _show(units[0], props, value_only)
    if cmd == "is-active":
        active = _active_state(_load(units[0]))[0]
        print(active)
        return 0 if active == "active" else 3
    if cmd in ("start", "stop", "enable", "disable", "restart", "reset-failed", "status"):
        unit = units[0]
        if cmd == "start":
            return _start(unit)
        if cmd == "stop":
            return _stop(unit)
        if cmd == "restart":
            if _load(unit) is not None:
                fakesvc.stop_job(unit)
            return _start(unit)
        if cmd == "enable":
            return _enable(unit, now)
        if cmd == "disable":
            return _disable(unit, now)
        if cmd == "reset-failed":
            return 0
        active, sub = _active_state(_load(unit))
        print(f"● {unit}\n     Active: {active} ({sub})")
        return 0 if active == "active" else 3
    return _err(f"fake systemctl: unsupported: {' '.join(argv)}", 64)
