"""`python -m mlx_native_server serve`: the server process itself.

What the login service runs (and what start runs in the foreground): the
same checks as start, then serve, logging to app.log only (the service
manager keeps stdout and stderr in their own logs).
"""

from __future__ import annotations

from ..core.errors import reported
from . import _flags
from .start import parser, serve_here


@reported
def main(argv: list[str]) -> int:
    serve_here(_flags.settings(parser("mlx_native_server serve").parse_args(argv)), terminal=False)
