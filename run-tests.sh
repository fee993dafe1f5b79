#!/usr/bin/env bash
# Usage: ./run-tests.sh [pytest options]
#
# Run the checks, then the test suite: creates .venv with the test
# dependencies on first use; runs ruff (lint and format check) over the
# package, tests, benchmarks and bench-local.py, and mypy over the package;
# then pytest. The checks take seconds and run before every pytest run, a
# subset too; any finding fails the command before pytest starts. Tests
# generate their tiny model offline and start real servers on free ports;
# nothing is downloaded from Hugging Face.
#
#   ./run-tests.sh                  checks, then everything
#   ./run-tests.sh -k anthropic     checks, then a subset
#   .venv/bin/python -m pytest -k anthropic     the subset alone, no checks
#   .venv/bin/ruff check --fix . && .venv/bin/ruff format .   fix what ruff can
set -euo pipefail
if [[ "${1:-}" =~ ^(-h|--help)$ ]]; then
    sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
    exit 0
fi
export MLX_NATIVE_SERVER_EXTRAS="${MLX_NATIVE_SERVER_EXTRAS:+$MLX_NATIVE_SERVER_EXTRAS,}test"
source "$(dirname "${BASH_SOURCE[0]}")/scripts/bootstrap.sh"
mns_bootstrap
cd "$MNS_REPO_DIR"

# All three run even when one fails, so one pass shows every finding, one
# line each ('ruff format --diff' shows what the formatter would change).
lint_paths=(mlx_native_server tests benchmarks bench-local.py)
failed=()
"$MNS_VENV/bin/ruff" check --output-format concise "${lint_paths[@]}" || failed+=("ruff check")
"$MNS_VENV/bin/ruff" format --check --output-format concise "${lint_paths[@]}" ||
    failed+=("ruff format --check")
"$MNS_VENV/bin/mypy" || failed+=("mypy")  # [tool.mypy] in pyproject.toml names the package
if ((${#failed[@]})); then
    printf -v names '%s, ' "${failed[@]}"
    echo "error: ${names%, } found problems (above); pytest did not run." >&2
    exit 1
fi
exec "$MNS_VENV/bin/python" -m pytest "$@"
