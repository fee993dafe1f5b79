"""`./start-server.sh`: check, then serve in the foreground.

`parser` and `prepare` are shared with `serve` (commands/serve.py), the
process the login service runs.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import NoReturn

# The server (and with it mlx) is imported only to serve: --status and
# --service stay quick.
from ..core import blas, config, logsetup, preflight
from ..core.errors import reported
from ..memory import plan as memory_plan
from . import _flags

log = logging.getLogger("mlx_native_server.commands.start")


def parser(prog: str = "start-server.sh") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve the model as an OpenAI- and Anthropic-compatible API "
        "in the foreground (Ctrl+C stops it).",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration and where each value came from, then exit",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the memory plan of the model at these settings on this machine, "
        "then exit (3 if it does not fit)",
    )
    config.add_flags(p)
    return p


def _rank() -> int:
    """This process's rank under mlx.launch (0 when not distributed)."""
    for name in ("MLX_RANK", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def _silent(*_lines: object) -> None:
    """Progress lines nobody asked for (--plan prints the plan only)."""


def _demo(settings: config.Settings, banner: bool = True) -> None:
    """With model = demo: make sure the demo model is there (a second or less)."""
    if settings.model == "demo":
        from ..models import demo as demo_model

        demo_model.generate(settings.paths.demo_model, progress=print if banner else _silent)
        if banner:
            print(demo_model.BANNER, flush=True)


def prepare(settings: config.Settings) -> tuple[config.Settings, memory_plan.Plan]:
    """Everything checked or made before the model loads; returns the
    settings to serve with (prompt_cache_bytes = auto resolved) and the
    memory plan they fit. Under mlx.launch only rank 0 serves HTTP, so only
    it checks the port."""
    from ..memory import device

    _demo(settings)
    for warning in preflight.key_warnings(settings):
        log.warning("%s", warning)
    preflight.check_security(settings)
    preflight.check_model(settings)
    settings, plan = device.enforce(settings)
    if _rank() == 0:
        preflight.check_port(settings)
    return settings, plan


def _add_service_flags(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """start-server.sh's ways to reach the login service (see SERVICE.md)."""
    p.add_argument(
        "--service",
        action="store_true",
        help="start the installed login service instead of serving in the "
        "foreground, and wait until it is ready",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="say whether the server and its login service are running and "
        "healthy, where the logs are, then exit (3 if not healthy)",
    )
    p.add_argument("--json", action="store_true", help="with --status or --plan: print JSON")
    return p


def _plan(settings: config.Settings, as_json: bool) -> int:
    """`--plan`: the memory plan on this machine, without loading the model."""
    from ..memory import device

    _demo(settings, banner=False)
    preflight.check_model(settings)
    return device.show(settings, as_json=as_json)


def _serve(settings: config.Settings) -> int:
    """In the foreground, unless the login service already serves this port."""
    from ..service import manager as service

    running = service.running_service(settings)
    if running is not None:
        st, svc = running
        print(
            f"mlx-native-server is already running as the login service {st.name} "
            f"(pid {st.pid}): {svc.base_url}. Stop it with ./stop-server.sh."
        )
        return 0
    serve_here(settings)


def serve_here(settings: config.Settings, terminal: bool = True) -> NoReturn:
    """Serve in this process until stopped (start in the foreground, and the
    `serve` verb the login service runs, with `terminal` off: app.log only)."""
    blas.preload(settings.cpu_blas)  # re-executes this process once, where it applies
    from .. import server

    logsetup.setup(settings, terminal=terminal)
    settings, plan = prepare(settings)
    server.exit_now(server.run(settings, plan))


@reported
def main(argv: list[str]) -> int:
    args = _add_service_flags(parser()).parse_args(argv)
    settings = _flags.settings(args)
    if args.print_config:
        print(config.describe(settings))
        return 0
    if args.plan:
        return _plan(settings, args.json)
    if args.status:
        from . import status

        return status.report(settings, as_json=args.json)
    if args.service:
        from ..service import manager as service

        return service.start_service(settings)
    return _serve(settings)
