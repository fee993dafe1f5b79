"""`python -m mlx_native_server VERB ...`: dispatch to one module per verb.

The root scripts call this. Each verb is a module of commands/ with
`main(argv) -> int` that parses its own flags into the settings object its
layer takes, then calls the layer; this module only picks the verb.
"""

from __future__ import annotations

import importlib
import sys

# verb -> (its module in mlx_native_server/commands/, the line `--help` shows)
VERBS = {
    "start": ("start", "start the server in the foreground (./start-server.sh)"),
    "serve": ("serve", "the server process itself (used by start and the service)"),
    "stop": ("stop", "stop a running server (./stop-server.sh)"),
    "status": ("status", "say whether the server and its service are running"),
    "config": ("config", "print the effective configuration and where each value came from"),
    "demo": ("demo", "generate the tiny random-weight demo model"),
    "install-service": ("install_service", "install the login service (./install-service.sh)"),
    "uninstall-service": ("uninstall_service", "remove the login service (./uninstall-service.sh)"),
    "convert": ("convert", "convert a Hugging Face model to MLX (./convert-model.sh)"),
    "mlx-lm": ("mlx_lm", "manage the mlx-lm install (./setup-mlx-lm-repo.sh)"),
}


def usage() -> str:
    lines = ["usage: python -m mlx_native_server VERB [options]", "", "verbs:"]
    lines += [f"  {verb:<18} {text}" for verb, (_, text) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one verb; its exit code (2 for no verb or an unknown one)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb '{verb}'.\n\n{usage()}", file=sys.stderr)
        return 2
    # Imported only when chosen: each verb loads what it needs (mlx only to serve).
    module = importlib.import_module(f"mlx_native_server.commands.{VERBS[verb][0]}")
    return module.main(rest)
