"""`./install-service.sh`: install the server as a login service and start it
(service/manager.py does the work; see SERVICE.md)."""

from __future__ import annotations

import argparse
import sys

from ..core import config
from ..core.errors import reported
from ..service import manager as service
from . import _flags


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="install-service.sh",
        description="Install the server as a login service (launchd on macOS, a systemd "
        "user unit on Linux) and start it. It starts at login, restarts after "
        "a crash, and stays stopped after ./stop-server.sh. Flags given here "
        "are recorded in the service; everything else comes from server.toml "
        "when the service starts. Running it again replaces the service.",
    )
    p.add_argument(
        "--print",
        action="store_true",
        help="print the plist or unit that would be installed, then exit",
    )
    config.add_flags(p)
    return p


@reported
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    settings = _flags.settings(args)
    recorded = _flags.given(args)  # only these: the rest stays server.toml's to change
    if args.print:
        sys.stdout.write(service.render_unit(settings, recorded).decode())
        return 0
    service.install_service(settings, recorded)
    return 0
