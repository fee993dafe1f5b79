#!/usr/bin/env bash
# Usage: ./setup-mlx-lm-repo.sh [--version X | --git URL [--ref REF]] [--force]
#        ./setup-mlx-lm-repo.sh --check VERSION [--keep DIR]
#        ./setup-mlx-lm-repo.sh --status | --reset
#
# Install mlx-lm from source into .venv instead of the pinned wheel, with the
# patches in patches/series applied (three-way merge), all or nothing: a patch
# that fails leaves the current install as it was. The source goes to
# mlx-lm-repo/ (git-ignored).
#
#   ./setup-mlx-lm-repo.sh                   the pinned version's PyPI sdist, patched
#   ./setup-mlx-lm-repo.sh --version 0.33.0  another release
#   ./setup-mlx-lm-repo.sh --git https://github.com/ml-explore/mlx-lm --ref main
#   ./setup-mlx-lm-repo.sh --check 0.33.0    would the patches apply? (installs nothing)
#   ./setup-mlx-lm-repo.sh --status          what is installed, from where, which patches
#   ./setup-mlx-lm-repo.sh --reset           back to the pinned release wheel
#
# Every option: ./setup-mlx-lm-repo.sh --help (after the first run).
# How to move to a new mlx-lm and carry patches: MLX_LM_MANAGEMENT.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/bootstrap.sh"
mns_main "${BASH_SOURCE[0]}" mlx-lm "$@"
