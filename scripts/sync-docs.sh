#!/usr/bin/env bash
# Usage: scripts/sync-docs.sh
#
# Regenerate what the docs derive from the configuration schema: server.toml
# and the README's configuration table. tests/test_config.py checks both.
set -euo pipefail
# shellcheck source=scripts/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
mns_bootstrap
cd "$MNS_REPO_DIR"
py="$MNS_VENV/bin/python"
"$py" -m mlx_native_server config --example >server.toml
"$py" - <<'PY'
import re
from pathlib import Path
from mlx_native_server.core.config_docs import markdown_table
readme = Path("README.md")
text = readme.read_text()
start, end = "<!-- config-table:start -->", "<!-- config-table:end -->"
new = re.sub(re.escape(start) + ".*?" + re.escape(end),
             lambda _: f"{start}\n{markdown_table()}\n{end}", text, flags=re.S)
readme.write_text(new)
PY
echo "server.toml and the README's configuration table are up to date."
