"""`./start-server.sh --status [--json]`: is the server up, and is its login service?

Says whether the service is installed, loaded, running (pid), healthy
(GET /health), how its last run ended, and where the logs are. With the
service installed, the port and log directory are the service's. Exit 0
when /health answers 200, else 3 (as LSB `status` commands do).
"""

from __future__ import annotations

import argparse
import json

from ..core import config
from ..core.errors import reported
from ..core.ports import read_pid
from ..service import manager as service
from ..service.state import exit_text
from . import _flags

EXIT_NOT_HEALTHY = 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="start-server.sh --status",
        description="Say whether the server and its login service are running and healthy.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    config.add_flags(p, names=("port", "host"))
    return p


def collect(settings: config.Settings) -> dict:
    """Everything status reports, as plain data."""
    mgr = service.manager(settings.paths)
    st = mgr.state() if mgr.file.exists() else None
    svc = service.service_settings(mgr, settings) if st is not None else settings
    code, word = service.probe_health(svc)
    p = svc.paths
    pid = st.pid if st is not None and st.running else read_pid(p.pid_file(svc.port))
    return {
        "service": st.to_json()
        if st is not None
        else {"manager": mgr.manager, "name": mgr.name, "file": str(mgr.file), "installed": False},
        "server": {
            "url": svc.base_url,
            "port": svc.port,
            "pid": pid,
            "healthy": code == 200,
            "health": {"http_status": code, "status": word},
        },
        "logs": {
            "app": str(p.app_log),
            "stdout": str(p.stdout_log),
            "stderr": str(p.stderr_log),
            "dir": str(p.log_dir),
        },
    }


def _yes(value) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def render(report: dict) -> str:
    s, srv, logs = report["service"], report["server"], report["logs"]
    lines = [f"service: {s['name']} ({s['manager']})"]
    if not s["installed"]:
        lines.append(f"  installed: no ({s['file']}); ./install-service.sh installs it")
    else:
        running = f"yes (pid {s['pid']})" if s["running"] else "no"
        lines += [
            f"  installed: yes ({s['file']})",
            f"  loaded:    {_yes(s['loaded'])}" + (f" ({s['detail']})" if s["detail"] else ""),
            f"  running:   {running}" + (f", state {s['state']}" if s["state"] else ""),
            f"  last exit: {exit_text(s['last_exit'])}",
        ]
    h = srv["health"]
    health = (
        "ok (GET /health -> 200)"
        if srv["healthy"]
        else f"no (GET /health -> {h['http_status']} {h['status']})"
        if h["http_status"]
        else f"no answer ({h['status']})"
    )
    lines += [
        f"server:  {srv['url']}" + (f" (pid {srv['pid']})" if srv["pid"] else ""),
        f"  healthy:   {health}",
        f"logs:    {logs['app']}",
        f"  service output: {logs['stdout']}, {logs['stderr']}",
    ]
    return "\n".join(lines)


def report(settings: config.Settings, as_json: bool = False) -> int:
    data = collect(settings)
    print(json.dumps(data, indent=2) if as_json else render(data))
    return 0 if data["server"]["healthy"] else EXIT_NOT_HEALTHY


@reported
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return report(_flags.settings(args, ("port", "host")), as_json=args.json)
