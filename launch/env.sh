# shellcheck shell=bash
# Activate the project's environment in the current shell:
#
#   source launch/env.sh
#
# Runs launch/setup.sh first when the environment is missing, activates the virtual environment
# (MELON_VENV, default ~/.cache/melon-hvd/venv), puts the repository root on PYTHONPATH so that
# `python -m data.synth ...` and `horovodrun -np 2 python hvd_train/dae.py ...` work from the root,
# and lets OpenMPI run as root (containers, CI).
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then  # run instead of sourced: it cannot change the caller's shell
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    [[ ${1:-} == -h || ${1:-} == --help ]] && exit 0
    echo "launch/env.sh is meant to be sourced: source launch/env.sh" >&2
    exit 2
fi
# No `set -euo pipefail` here: this file is sourced into interactive shells, where it would stay on.
_melon_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MELON_VENV=${MELON_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/melon-hvd/venv}
if [[ ! -x "$MELON_VENV/bin/horovodrun" ]]; then
    bash "$_melon_root/launch/setup.sh" || return 1
fi
# shellcheck disable=SC1091
source "$MELON_VENV/bin/activate"
export PYTHONPATH="$_melon_root${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
if [[ $(id -u) -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
unset _melon_root
