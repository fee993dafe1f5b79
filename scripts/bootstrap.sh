#!/usr/bin/env bash
# Sourced by the root scripts: finds or creates the virtual environment, then
# runs one verb of the Python package in it.
#
#   mns_main SCRIPT VERB ARGS...  the whole body of a root script
#   mns_run VERB ARGS...          bootstrap if needed, then exec the verb
#
# Environment:
#   MLX_NATIVE_SERVER_VENV     where the venv lives (default: <repo>/.venv)
#   MLX_NATIVE_SERVER_BACKEND  Linux mlx backend: cpu (default) or cuda13
#   MLX_NATIVE_SERVER_EXTRAS   extra package groups to install, comma-separated
#   PYTHON                     the interpreter to build the venv with

MNS_REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MNS_VENV="${MLX_NATIVE_SERVER_VENV:-$MNS_REPO_DIR/.venv}"
MNS_MIN_PY="3.10"

mns_die() {
    echo "error: $*" >&2
    exit 1
}

mns_extras() {
    local extras="${MLX_NATIVE_SERVER_EXTRAS:-}"
    if [[ "$(uname -s)" != "Darwin" ]]; then
        local backend="${MLX_NATIVE_SERVER_BACKEND:-cpu}"
        case "$backend" in
            cpu | cuda13) ;;
            *) mns_die "MLX_NATIVE_SERVER_BACKEND='$backend' is not a known backend; use cpu or cuda13." ;;
        esac
        extras="${extras:+$extras,}$backend"
    fi
    echo "$extras"
}

mns_find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10; do
        [[ -n "$candidate" ]] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c "import sys; sys.exit(sys.version_info < (3, 10))" 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# The stamp holds a checksum of pyproject.toml and the extras installed; a
# venv with those extras (or more) and the same pyproject.toml is ready.
mns_pyproject_sum() {
    cksum <"$MNS_REPO_DIR/pyproject.toml" | cut -d' ' -f1
}

mns_venv_ready() {
    local stamp_file="$1" want_sum="$2" want_extras="$3" have_sum have_extras extra
    [[ -x "$MNS_VENV/bin/python" && -f "$stamp_file" ]] || return 1
    read -r have_sum have_extras <"$stamp_file" || return 1
    [[ "$have_sum" == "$want_sum" ]] || return 1
    for extra in ${want_extras//,/ }; do
        [[ ",$have_extras," == *",$extra,"* ]] || return 1
    done
}

mns_bootstrap() {
    local extras stamp_file want_sum
    extras="$(mns_extras)"
    stamp_file="$MNS_VENV/.mlx-native-server-stamp"
    want_sum="$(mns_pyproject_sum)"
    if mns_venv_ready "$stamp_file" "$want_sum" "$extras"; then
        return 0
    fi
    # Keep the extras an earlier run installed (tests add 'test').
    if [[ -f "$stamp_file" ]]; then
        local _sum old_extras
        read -r _sum old_extras <"$stamp_file" || true
        extras="$(echo "${old_extras:-}${old_extras:+,}$extras" | tr ',' '\n' | awk 'NF && !seen[$0]++' | paste -sd, -)"
    fi

    local python
    python="$(mns_find_python)" ||
        mns_die "Python $MNS_MIN_PY or newer was not found; install it (macOS: 'brew install python@3.12', Debian: 'apt-get install python3 python3-venv') or set PYTHON=/path/to/python3."

    local spec="$MNS_REPO_DIR"
    [[ -n "$extras" ]] && spec="${MNS_REPO_DIR}[$extras]"
    echo "setting up $MNS_VENV (first run or dependencies changed; this takes a few minutes)..." >&2
    if command -v uv >/dev/null 2>&1; then
        [[ -x "$MNS_VENV/bin/python" ]] || uv venv --quiet --python "$python" "$MNS_VENV" ||
            mns_die "could not create $MNS_VENV with uv; remove it and run again."
        VIRTUAL_ENV="$MNS_VENV" uv pip install --python "$MNS_VENV/bin/python" -e "$spec" >&2 ||
            mns_die "installing the dependencies failed (see above); check the network or the package index, then run again."
    else
        if [[ ! -x "$MNS_VENV/bin/python" ]]; then
            "$python" -m venv "$MNS_VENV" ||
                mns_die "could not create $MNS_VENV; on Debian/Ubuntu run 'apt-get install python3-venv', then run again."
        fi
        "$MNS_VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -e "$spec" >&2 ||
            mns_die "installing the dependencies failed (see above); check the network or the package index, then run again."
    fi
    echo "$want_sum $extras" >"$stamp_file"
}

# Print the '# Usage:' header of the calling script (lines starting with '#'
# after the shebang), for --help before the venv exists.
mns_usage() {
    sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$1"
}

mns_run() {
    mns_bootstrap
    exec "$MNS_VENV/bin/python" -m mlx_native_server "$@"
}

# The body of a root script: `mns_main "${BASH_SOURCE[0]}" VERB "$@"`.
# --help before the venv exists prints the script's Usage header (no
# install); anything else runs VERB in the venv, whose parser has the full help.
mns_main() {
    local script="$1" verb="$2"
    shift 2
    if [[ "${1:-}" =~ ^(-h|--help)$ && ! -x "$MNS_VENV/bin/python" ]]; then
        mns_usage "$script"
        exit 0
    fi
    mns_run "$verb" "$@"
}
