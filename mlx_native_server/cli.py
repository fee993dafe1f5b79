"""`python -m mlx_native_server VERB ...`: dispatch to one module per verb.

The root scripts call this; each verb module has `main(argv) -> int` that
parses its own flags into a Settings object and does the work.
"""

from __future__ import annotations

import importlib
import sys

VERBS = {
    "start": ("commands.start", "start the server in the foreground (./start-server.sh)"),
    "serve": ("commands.start", "the server process itself (used by start and the service)"),
    "stop": ("commands.stop", "stop a running server (./stop-server.sh)"),
    "status": ("commands.status", "say whether the server and its service are running"),
    "config": ("commands.config", "print the effective configuration and where each value came from"),
    "demo": ("models.demo", "generate the tiny random-weight demo model"),
    "install-service": ("service.manager", "install the login service (./install-service.sh)"),
    "uninstall-service": ("service.manager", "remove the login service (./uninstall-service.sh)"),
    "convert": ("models.convert", "convert a Hugging Face model to MLX (./convert-model.sh)"),
    "mlx-lm": ("upstream.repo", "manage the mlx-lm install (./setup-mlx-lm-repo.sh)"),
}


def usage() -> str:
    lines = ["usage: python -m mlx_native_server VERB [options]", "", "verbs:"]
    lines += [f"  {verb:<18} {text}" for verb, (_, text) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb '{verb}'.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"mlx_native_server.{VERBS[verb][0]}")
    entry = getattr(module, "main_" + verb.replace("-", "_"), None) or module.main
    return entry(rest)
