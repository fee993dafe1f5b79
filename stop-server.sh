#!/usr/bin/env bash
# Usage: ./stop-server.sh [--port N]
#
# Stop the server: through the login service when it is installed (so it
# stays stopped), else by its pid file, falling back to the process on the
# port. SIGTERM, a bounded wait, then SIGKILL. "Not running" exits 0.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/bootstrap.sh"
mns_main "${BASH_SOURCE[0]}" stop "$@"
