#!/usr/bin/env bash
# Usage: ./start-server.sh [--model PATH|demo] [--port N] [--host ADDR] [options]
#
# Start the OpenAI- and Anthropic-compatible server in the foreground
# (Ctrl+C stops it). The first run creates .venv and installs what it needs.
#
#   ./start-server.sh                 serve the configured model on :8000
#   ./start-server.sh --model demo    serve a tiny generated model (random text)
#   ./start-server.sh --print-config  show the effective configuration
#   ./start-server.sh --plan [--json]  the memory plan: does it fit this machine? (exit 3 if not)
#   ./start-server.sh --service       start the installed login service instead
#   ./start-server.sh --status [--json]  is it installed, running, healthy? logs?
#
# Every option: ./start-server.sh --help (after the first run). Values come
# from flags, else MLX_NATIVE_SERVER_* environment variables, else server.toml,
# else the defaults.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/bootstrap.sh"
mns_main "${BASH_SOURCE[0]}" start "$@"
