#!/usr/bin/env bash
# Usage: ./convert-model.sh <hf-repo-or-local-dir> [--bits 4|6|8] [--group-size 64] [--name NAME] [--force]
#
# Convert a Hugging Face checkpoint to MLX into local-models/<Name>-MLX-<bits>bit/
# with mlx-lm's converter, keeping the architecture's own quantization rule
# (MiniMax: router gates at 8 bits). Checks free disk space first, refuses to
# overwrite without --force, then loads the result, generates a few tokens and
# prints the config line that points the server at it.
#
#   ./convert-model.sh cerebras/MiniMax-M2.1-REAP-50 --bits 4
#   ./convert-model.sh ~/Downloads/MiniMax-M2.1 --bits 6 --name MiniMax-M2.1
#
# A local directory in Hugging Face format works offline. Every option:
# ./convert-model.sh --help (after the first run).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/bootstrap.sh"
mns_main "${BASH_SOURCE[0]}" convert "$@"
