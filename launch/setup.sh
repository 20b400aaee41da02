#!/usr/bin/env bash
# Set up everything this project needs on a fresh Debian machine, idempotently.
#
#   bash launch/setup.sh [--help]
#
# 1. Debian packages: OpenMPI (runtime + headers), cmake, compilers, Python headers/venv, tcmalloc
#    (launch/env.sh preloads it: docs/cpu.md).
# 2. A Python virtual environment OUTSIDE the checkout (default ~/.cache/melon-hvd/venv,
#    override with MELON_VENV=/path) holding the pinned dependencies of pyproject.toml.
# 3. Horovod 0.28.1 built from source against that TensorFlow with MPI + Gloo.
# 4. A check that `horovodrun --check-build` reports TensorFlow, MPI and Gloo.
#
# When nothing changed (same pyproject.toml and setup.sh) it only re-runs the check (seconds).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MELON_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/melon-hvd/venv}
python_bin=${PYTHON:-python3}
stamp="$venv/.melon-setup-stamp"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- Debian packages
apt_packages=(openmpi-bin libopenmpi-dev cmake g++ make python3-dev python3-venv libtcmalloc-minimal4)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo_cmd=(sudo)
    fi
    log "installing Debian packages: ${missing[*]}"
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- virtual environment
want_stamp=$(cat "$repo_root/pyproject.toml" "$repo_root/launch/setup.sh" | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" && -x "$venv/bin/horovodrun" ]]; then
    log "environment up to date: $venv"
else
    [[ -x "$venv/bin/python" ]] || { log "creating virtual environment $venv"; mkdir -p "$(dirname "$venv")"; "$python_bin" -m venv "$venv"; }
    py="$venv/bin/python"
    "$py" -m pip install -q --upgrade pip setuptools wheel
    # The pins live in pyproject.toml only; read them from there.
    mapfile -t deps < <("$py" - "$repo_root/pyproject.toml" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
for dep in project["dependencies"] + extras["test"] + extras["bench"]:
    print(dep)
PY
    )
    horovod_pin=$("$py" -c 'import sys,tomllib; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["optional-dependencies"]["horovod"][0])' "$repo_root/pyproject.toml")
    log "installing ${#deps[@]} pinned packages"
    # mpi4py is compiled against the system OpenMPI, the same MPI Horovod links against.
    MPICC=mpicc "$py" -m pip install -q --no-binary mpi4py "${deps[@]}"
    if ! "$py" -m pip show -q horovod >/dev/null 2>&1 || [[ "$("$py" -m pip show horovod | sed -n 's/^Version: //p')" != "${horovod_pin#*==}" ]]; then
        log "building $horovod_pin against TensorFlow (MPI + Gloo); this takes several minutes"
        # The system cmake (not pip's 4.x) builds the bundled gloo; the policy floor keeps newer cmakes working too.
        PATH="/usr/bin:$PATH" CMAKE_POLICY_VERSION_MINIMUM=3.5 \
        HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
        HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
            "$py" -m pip install -q --no-build-isolation --no-cache-dir "$horovod_pin"
    fi
    echo "$want_stamp" >"$stamp"
fi

# ---------------------------------------------------------------- verification
check=$("$venv/bin/horovodrun" --check-build 2>&1) || die "horovodrun --check-build failed:
$check"
for feature in TensorFlow MPI Gloo; do
    grep -Eq "\[X\] $feature\b" <<<"$check" || { rm -f "$stamp"; die "Horovod lacks $feature:
$check"; }
done
log "Horovod OK (TensorFlow, MPI, Gloo) in $venv"
