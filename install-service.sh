#!/usr/bin/env bash
# Usage: ./install-service.sh [--model PATH|demo] [--port N] [options] [--print]
#
# Install the server as a login service and start it: a LaunchAgent
# (~/Library/LaunchAgents/com.local.mlx-native-server.plist) on macOS, a
# systemd user unit (~/.config/systemd/user/mlx-native-server.service) on
# Linux. It starts at login, restarts after a crash, and stays stopped after
# ./stop-server.sh. Flags given here are recorded in the service; the rest
# comes from server.toml. Running it again replaces the service.
#
#   ./install-service.sh                   serve the configured model
#   ./install-service.sh --port 8001       record --port 8001 in the service
#   ./install-service.sh --print           show the file it would install
#
# Every option: ./install-service.sh --help (after the first run). See SERVICE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/bootstrap.sh"
mns_main "${BASH_SOURCE[0]}" install-service "$@"
