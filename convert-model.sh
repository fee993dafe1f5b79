#!/usr/bin/env bash
# Usage: ./convert-model.sh <hf-repo-or-local-dir> [--bits 4|6|8] [--group-size 64] [--name NAME] [--force]
#
# Convert a Hugging Face checkpoint to MLX into local-models/<Name>-MLX-<bits>bit/
# with mlx-lm's converter, keeping the architecture's own quantization rule
# (MiniMax: router gates at 8 bits). A source that is already an MLX quantized
# model (mlx-community's, say) is not converted again: it is installed as is
# into local-models/<Name>/, at its own bits, once the memory plan says it fits
# this machine. Checks free disk space first, refuses to overwrite without
# --force, then loads the result, generates a few tokens and prints the config
# line that points the server at it.
#
#   ./convert-model.sh cerebras/MiniMax-M2.1-REAP-50 --bits 4
#   ./convert-model.sh ~/Downloads/MiniMax-M2.1 --bits 6 --name MiniMax-M2.1
#   ./convert-model.sh mlx-community/<an-MLX-4bit-repo>      installed as is
#
# A local directory works offline (hard-linked, or copied, when it is MLX).
# Every option: ./convert-model.sh --help (after the first run). MODELS.md
# says which to pick.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/bootstrap.sh"
mns_main "${BASH_SOURCE[0]}" convert "$@"
