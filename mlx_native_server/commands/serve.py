"""`python -m mlx_native_server serve`: the server process itself.

What the login service runs (and what start runs in the foreground): the
same checks as start, then serve, logging to app.log only (the service
manager keeps stdout and stderr in their own logs).
"""

from __future__ import annotations

from ..core import blas, logsetup
from ..core.errors import reported
from . import _flags
from .start import parser, prepare


@reported
def main(argv: list[str]) -> int:
    settings = _flags.settings(parser("mlx_native_server serve").parse_args(argv))
    blas.preload(settings.cpu_blas)  # re-executes this process once, where it applies
    from .. import server

    logsetup.setup(settings, terminal=False)
    settings, plan = prepare(settings)
    server.exit_now(server.run(settings, plan))
