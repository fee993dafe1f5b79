#!/usr/bin/env bash
# Usage: ./uninstall-service.sh
#
# Stop the login service, unload (launchd) or disable (systemd) it, and
# remove its plist or unit file. Safe to run again: it says what it did, or
# that there was nothing to do. The logs stay in logs/. See SERVICE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/bootstrap.sh"
mns_main "${BASH_SOURCE[0]}" uninstall-service "$@"
