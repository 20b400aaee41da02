# shellcheck shell=bash
# Activate the project's environment in the current shell:
#
#   source launch/env.sh
#
# Runs launch/setup.sh first when the environment is missing, activates the virtual environment
# (MELON_VENV, default ~/.cache/melon-hvd/venv), puts the repository root on PYTHONPATH so that
# `python -m data.synth ...` and `horovodrun -np 2 python hvd_train/dae.py ...` work from the root,
# preloads tcmalloc when it is installed (MELON_ALLOCATOR=glibc: not; docs/cpu.md), and lets OpenMPI run
# as root (containers, CI).
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then  # run instead of sourced: it cannot change the caller's shell
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
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
# tcmalloc in front of glibc's malloc for everything started from this shell (docs/cpu.md): glibc hands every
# large tensor's memory back to the kernel when it is freed, so the next step's tensors fault it in again, a
# page at a time (10.9 million page faults in a 30-step DAE run on small at -np 2, against 0.85 million with
# tcmalloc). MELON_ALLOCATOR=glibc leaves glibc's malloc alone.
_melon_tcmalloc=/usr/lib/$(uname -m)-linux-gnu/libtcmalloc_minimal.so.4
if [[ ${MELON_ALLOCATOR:-tcmalloc} == tcmalloc && -f $_melon_tcmalloc && ":${LD_PRELOAD:-}:" != *":$_melon_tcmalloc:"* ]]; then
    export LD_PRELOAD=$_melon_tcmalloc${LD_PRELOAD:+:$LD_PRELOAD}
    export TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=${TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD:-1099511627776}  # no notes
fi
unset _melon_tcmalloc
if [[ $(id -u) -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
unset _melon_root
