"""`./uninstall-service.sh`: stop and remove the login service (service/manager.py)."""

from __future__ import annotations

import argparse

from ..core import config
from ..core.errors import reported
from ..service import manager as service


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="uninstall-service.sh",
        description="Stop the login service, unload or disable it, and remove its file. "
        "Safe to run when it is not installed.",
    )


@reported
def main(argv: list[str]) -> int:
    parser().parse_args(argv)
    service.uninstall_service(config.load({}))
    return 0
