"""The login service: install and uninstall it (`./install-service.sh`,
`./uninstall-service.sh`; their flags: commands/install_service.py and
commands/uninstall_service.py), and find, start and stop it.

launchd on macOS, systemd (a user unit) elsewhere; the environment variable
MLX_NATIVE_SERVER_SERVICE_MANAGER=launchd|systemd overrides the choice
(tests drive both with fake launchctl/systemctl). The service runs
`<venv>/bin/python -m mlx_native_server serve` in the project directory
with the settings of server.toml, plus exactly the flags given to
install-service. start, stop and status use the helpers at the bottom.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

from ..core import config, filemodes, preflight
from ..core.errors import UserError
from ..core.ports import port_is_free, who_listens
from .launchd import Launchd
from .render import ServiceSpec, stop_grace
from .state import ServiceState
from .systemd import Systemd

Manager = Launchd | Systemd
MANAGER_ENV = "MLX_NATIVE_SERVER_SERVICE_MANAGER"
START_GRACE = 2.0  # seconds after a start before an exited service counts as failed


def manager(paths, environ: Mapping[str, str] | None = None) -> Manager:
    """The service manager of this platform (or the one the environment names)."""
    environ = os.environ if environ is None else environ
    name = environ.get(MANAGER_ENV) or ("launchd" if sys.platform == "darwin" else "systemd")
    if name not in ("launchd", "systemd"):
        raise UserError(f"{MANAGER_ENV}={name!r} is not a service manager; use launchd or systemd.")
    return Launchd(paths) if name == "launchd" else Systemd(paths)


def build_spec(
    settings: config.Settings, args: tuple[str, ...], environ: Mapping[str, str] | None = None
) -> ServiceSpec:
    environ = os.environ if environ is None else environ
    p = settings.paths
    env = []
    if p.home != p.project_dir:
        env.append(("MLX_NATIVE_SERVER_HOME", str(p.home)))
    if environ.get("MLX_NATIVE_SERVER_CONFIG"):
        env.append(("MLX_NATIVE_SERVER_CONFIG", str(p.config_file)))
    return ServiceSpec(
        repo_dir=p.project_dir,
        python=p.venv / "bin" / "python",
        log_dir=p.log_dir,
        args=args,
        environment=tuple(env),
        stop_grace=stop_grace(settings.shutdown_timeout),
    )


def _check_servable(settings: config.Settings, mgr: Manager) -> None:
    """Refuse to install a service that could only crash-loop."""
    if settings.model == "demo":
        from ..models import demo as demo_model

        demo_model.generate(settings.paths.demo_model)
    preflight.check_security(settings)
    preflight.check_model(settings)
    if not port_is_free(settings.host, settings.port):
        holder = who_listens(settings.port)
        if holder is None or holder.pid != mgr.state().pid:
            who = holder.describe() if holder else "another process"
            raise UserError(
                f"port {settings.port} is in use by {who}; stop it first "
                f"(./stop-server.sh --port {settings.port}) or install with --port N."
            )


def _make_log_files(paths) -> None:
    """The log dir (0700 if new) and the service's stdout/stderr logs, made
    (or tightened to) 0600 before launchd or systemd creates them with its umask."""
    filemodes.private_dir(paths.log_dir, tighten_existing=False)
    for log_file in (paths.stdout_log, paths.stderr_log):
        os.close(filemodes.open_private(log_file, append=True))


def render_unit(settings: config.Settings, recorded: tuple[str, ...]) -> bytes:
    """The plist or unit install_service would write (`install-service.sh --print`)."""
    return manager(settings.paths).render(build_spec(settings, recorded))


def install_service(settings: config.Settings, recorded: tuple[str, ...]) -> None:
    """Check that the service could serve, then install and start it.

    `recorded` is the argv the service runs with (the flags given to
    install-service); everything else it reads from server.toml when it
    starts. Replaces an installed service. UserError for a service that
    could only crash-loop (no model, an insecure setting, a busy port)."""
    mgr = manager(settings.paths)
    spec = build_spec(settings, recorded)
    content = mgr.render(spec)
    _check_servable(settings, mgr)
    for warning in preflight.key_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    _make_log_files(settings.paths)
    for line in mgr.install(content, private=spec.holds_key):
        print(f"{mgr.manager}: {line}")
    p = settings.paths
    print(
        f"installed the login service {mgr.name}; it serves {settings.base_url} once the "
        f"model has loaded. Check: ./start-server.sh --status. Logs: {p.app_log} "
        f"(service output: {p.stdout_log}, {p.stderr_log})."
    )


def uninstall_service(settings: config.Settings) -> None:
    """Stop, unload or disable, and remove the service; says what it did,
    or that it was not installed."""
    mgr = manager(settings.paths)
    done = mgr.uninstall()
    for line in done:
        print(f"{mgr.manager}: {line}")
    if not done:
        print(
            f"the login service {mgr.name} is not installed ({mgr.file} does not exist); "
            "nothing to do."
        )


# --- for start, stop and status ---------------------------------------------


def service_settings(mgr: Manager, base: config.Settings) -> config.Settings:
    """The settings the installed service runs with: its recorded flags over
    server.toml (not this shell's MLX_NATIVE_SERVER_* variables: it never sees them)."""
    return config.load(_recorded_flags(mgr.recorded_args()), environ={}, paths=base.paths)


def _recorded_flags(argv: list[str]) -> dict[str, str | None]:
    """{key name: value or None} from the argv recorded in the service file,
    read the way `serve` reads it (anything else in it ignored)."""
    p = argparse.ArgumentParser(add_help=False)
    config.add_flags(p)
    recorded, _ = p.parse_known_args(argv)
    return {k.name: getattr(recorded, k.name) for k in config.KEYS}


def installed(settings: config.Settings) -> tuple[Manager, config.Settings] | None:
    """The manager and the service's settings, if the service file exists."""
    mgr = manager(settings.paths)
    if not mgr.file.exists():
        return None
    return mgr, service_settings(mgr, settings)


def probe_health(settings: config.Settings, timeout: float = 2.0) -> tuple[int | None, str]:
    """GET /health: (HTTP status or None if nothing answers, its status word or error)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{settings.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}").get("status", "")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}").get("status", "")
        except ValueError:
            return e.code, ""
    except (OSError, ValueError) as e:
        return None, str(getattr(e, "reason", e))


def running_service(settings: config.Settings) -> tuple[ServiceState, config.Settings] | None:
    """The service's state if it is installed, running, and on settings' port."""
    found = installed(settings)
    if found is None:
        return None
    mgr, svc = found
    if svc.port != settings.port:
        return None
    st = mgr.state()
    return (st, svc) if st.running else None


def stop_service(settings: config.Settings) -> str | None:
    """Stop the service through its manager if it serves settings' port; None otherwise."""
    found = installed(settings)
    if found is None or found[1].port != settings.port:
        return None
    return found[0].stop(settings.stop_timeout)


def start_service(settings: config.Settings) -> int:
    """`./start-server.sh --service`: start the installed service, wait for /health."""
    found = installed(settings)
    if found is None:
        mgr = manager(settings.paths)
        raise UserError(
            f"the login service is not installed ({mgr.file} does not exist); "
            "run ./install-service.sh first."
        )
    mgr, svc = found
    before = mgr.state()
    if before.running and probe_health(svc)[0] == 200:
        print(f"the login service {mgr.name} is already running (pid {before.pid}): {svc.base_url}")
        return 0
    mgr.start()
    started = time.monotonic()
    deadline = started + svc.start_timeout
    while time.monotonic() < deadline:
        if probe_health(svc, timeout=1.0)[0] == 200:
            st = mgr.state()
            print(
                f"ready: {svc.base_url} (model {svc.served_model_id}), served by the login "
                f"service {mgr.name} (pid {st.pid})"
            )
            return 0
        st = mgr.state()
        settled = time.monotonic() - started > START_GRACE
        if not st.running and settled and st.last_exit not in (None, 0):
            raise UserError(
                f"the login service {mgr.name} stopped while starting "
                f"({st.last_exit_text}); see {svc.paths.app_log} and "
                f"{svc.paths.stderr_log}."
            )
        time.sleep(0.5)
    raise UserError(
        f"the login service {mgr.name} did not answer {svc.base_url[:-3]}/health "
        f"within {svc.start_timeout:g}s (start_timeout); see {svc.paths.app_log}."
    )
