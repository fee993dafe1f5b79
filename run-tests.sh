#!/usr/bin/env bash
# Usage: ./run-tests.sh [pytest options]
#
# Run the whole test suite: creates .venv with the test dependencies on first
# use, then runs pytest. Tests generate their tiny model offline and start
# real servers on free ports; nothing is downloaded from Hugging Face.
#
#   ./run-tests.sh                  everything
#   ./run-tests.sh -k anthropic     a subset
set -euo pipefail
if [[ "${1:-}" =~ ^(-h|--help)$ ]]; then
    sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
    exit 0
fi
export MLX_NATIVE_SERVER_EXTRAS="${MLX_NATIVE_SERVER_EXTRAS:+$MLX_NATIVE_SERVER_EXTRAS,}test"
source "$(dirname "${BASH_SOURCE[0]}")/scripts/bootstrap.sh"
mns_bootstrap
cd "$MNS_REPO_DIR"
exec "$MNS_VENV/bin/python" -m pytest "$@"
