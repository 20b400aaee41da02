# shellcheck shell=bash
# What every launch/slurm/*.sbatch does, in one place; sourced by them, never run.
#
# melon_slurm_init NAME SCRIPT ARGS...   --help, the job's layout, the run directory, the launcher, logs
# melon_stages STAGE...                  preprocess (split + data.preprocess), dae, pretrain, finetune
#
# Ranks: one per task of the allocation (SLURM_NTASKS over SLURM_NNODES nodes, SLURM_NTASKS_PER_NODE per
# node: one per GPU). They are started with `srun --mpi=pmix` (MELON_SRUN_MPI picks another PMI), or with
# `mpirun` inside the allocation where srun has no PMIx: MELON_LAUNCHER=auto (default: srun when
# `srun --mpi=list` lists pmix, else mpirun), srun or mpirun. MELON_IMAGE runs every rank in that
# container image through pyxis (`srun --container-image`), with the checkout mounted at its own path.
set -euo pipefail
MELON_START_DIR=${MELON_START_DIR:-$PWD}
MELON_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../lib.sh
source "$MELON_REPO/launch/lib.sh"
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then  # run, not sourced: the only thing it does is explain itself
    melon_usage "$0"
    exit 0
fi

# melon_slurm_init NAME SCRIPT ARGS...: NAME names the log; SCRIPT is the sbatch file (its --help).
melon_slurm_init() {
    local name=$1 script=$2 gpus spec
    local -a specs cli=()
    shift 2
    while (($#)); do
        case "$1" in
            -h|--help) melon_usage "$script"; melon_launch_help; exit 0 ;;
            --set) (($# >= 2)) || melon_die "--set needs a value"; cli+=("$2"); shift 2 ;;
            --set=*) cli+=("${1#*=}"); shift ;;
            *) melon_usage "$script" >&2; melon_die "unknown argument: $1" ;;
        esac
    done
    read -r -a specs <<<"${MELON_SET:-}"  # MELON_SET="train.epochs=10 dae:train.warmup_steps=600"
    for spec in "${specs[@]}" "${cli[@]}"; do melon_add_set "$spec"; done  # the command line's come last, and win

    if [[ -z ${SLURM_JOB_ID:-} && -z ${MELON_RUN_DIR:-} ]]; then
        melon_die "not inside a Slurm job: submit it with sbatch (or set MELON_RUN_DIR, and MELON_DRY_RUN=1 to only print the commands)"
    fi
    if [[ -n ${MELON_RUN_DIR:-} ]]; then
        MELON_RUN=$(melon_abspath "$MELON_RUN_DIR")  # the same MELON_RUN_DIR again: resume
    else
        MELON_RUN=$MELON_REPO/runs/slurm-$SLURM_JOB_ID
    fi
    MELON_WORKDIR=$(melon_abspath "${MELON_WORK:-$MELON_RUN/work}")
    MELON_NODES=${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-1}}
    MELON_PER_NODE=${SLURM_NTASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-}}
    MELON_PER_NODE=${MELON_PER_NODE%%[!0-9]*}  # "4(x2)" -> 4
    MELON_NTASKS=${SLURM_NTASKS:-${SLURM_NPROCS:-$((MELON_NODES * ${MELON_PER_NODE:-1}))}}
    MELON_PER_NODE=${MELON_PER_NODE:-$((MELON_NTASKS / MELON_NODES))}
    gpus=${SLURM_GPUS_PER_NODE:-}
    gpus=${gpus##*:}  # "a100:4" -> 4
    if [[ -n $gpus && $gpus != "$MELON_PER_NODE" ]]; then
        melon_log "WARNING: $MELON_PER_NODE ranks per node on $gpus GPUs per node; the trainers want one rank per GPU (--ntasks-per-node=$gpus)"
    fi
    MELON_PYTHON=${MELON_PYTHON:-python}
    melon_pick_launcher

    cd "$MELON_REPO"
    if [[ -z ${MELON_IMAGE:-} ]]; then  # bare metal: the project's environment when there is one
        local venv=${MELON_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/melon-hvd/venv}
        if [[ -f $venv/bin/activate ]]; then
            # shellcheck disable=SC1091
            source "$venv/bin/activate"
        fi
    fi
    export PYTHONPATH="$MELON_REPO${PYTHONPATH:+:$PYTHONPATH}"
    if [[ ${MELON_DRY_RUN:-0} != 1 ]]; then
        mkdir -p "$MELON_RUN/logs"
        exec > >(tee -a "$MELON_RUN/logs/$name-${SLURM_JOB_ID:-manual}.log") 2>&1
    fi
    melon_log "job ${SLURM_JOB_ID:-(none)} $name: $MELON_NTASKS ranks on $MELON_NODES node(s) (${SLURM_JOB_NODELIST:-?}), $MELON_PER_NODE per node, launcher $MELON_LAUNCH${MELON_IMAGE:+, image $MELON_IMAGE}"
    melon_log "run directory: $MELON_RUN"
    if ((${SLURM_RESTART_COUNT:-0} > 0)); then
        melon_log "requeued $SLURM_RESTART_COUNT time(s): finished steps are skipped, trainers resume from their checkpoints"
    fi
    melon_log_tuning_env
}

# The launch settings every script shares (the end of each script's --help).
melon_launch_help() {
    cat <<'EOF'

Launching, in every launch/slurm script:
  MELON_LAUNCHER   auto (default: srun --mpi=pmix when `srun --mpi=list` lists pmix, else mpirun
                   inside the allocation), srun or mpirun
  MELON_SRUN_MPI   srun's PMI (default pmix; e.g. pmi2); MELON_SRUN_ARGS, MELON_MPIRUN_ARGS: extra arguments
  MELON_IMAGE      run every step in this container image through pyxis (srun --container-image), e.g. a
                   .sqsh from `enroot import`; the checkout is mounted at its own path
  MELON_CONTAINER_MOUNTS   extra pyxis mounts, SRC:DST,...
  MELON_REPO       the checkout (default: the directory sbatch was run from)
  MELON_DRY_RUN=1  print the srun/mpirun commands instead of running them
HOROVOD_* and NCCL_* variables (HOROVOD_FUSION_THRESHOLD, NCCL_SOCKET_IFNAME, ...) reach every rank.
EOF
}

melon_pick_launcher() {
    MELON_LAUNCH=${MELON_LAUNCHER:-auto}
    if [[ $MELON_LAUNCH == auto ]]; then
        local plugins=""
        command -v srun >/dev/null && plugins=$(srun --mpi=list 2>&1 || true)
        if [[ $plugins =~ pmix ]]; then
            MELON_LAUNCH=srun
        else
            MELON_LAUNCH=mpirun
            melon_log "no srun with PMIx here (srun --mpi=list): starting the ranks with mpirun"
        fi
    fi
    case $MELON_LAUNCH in
        srun) ;;
        mpirun) [[ -z ${MELON_IMAGE:-} ]] || melon_die "MELON_IMAGE needs srun (pyxis): set MELON_LAUNCHER=srun, and MELON_SRUN_MPI=pmi2 where srun has no PMIx" ;;
        *) melon_die "MELON_LAUNCHER must be auto, srun or mpirun, not '$MELON_LAUNCH'" ;;
    esac
}

# srun's container options: the image, the checkout and every folder outside it mounted at its own path.
melon_container_args() {
    MELON_CONTAINER=()
    [[ -n ${MELON_IMAGE:-} ]] || return 0
    local -a mounts=("$MELON_REPO")
    local dir m covered
    for dir in "$(dirname "$MELON_RUN")" "$(dirname "$MELON_WORKDIR")" ${MELON_DATA:+"$(melon_abspath "$MELON_DATA")"} \
               ${MELON_SPLIT:+"$(melon_abspath "$MELON_SPLIT")"}; do
        covered=0
        for m in "${mounts[@]}"; do [[ $dir == "$m" || $dir == "$m"/* ]] && covered=1; done
        ((covered)) || mounts+=("$dir")
    done
    local spec=""
    for m in "${mounts[@]}"; do spec+="$m:$m,"; done
    spec+=${MELON_CONTAINER_MOUNTS:-}
    MELON_CONTAINER=(--container-image="$MELON_IMAGE" --container-mounts="${spec%,}" --container-workdir="$MELON_REPO")
}

# melon_launch ARGS...: `python ARGS` on every rank of the allocation.
melon_launch() {
    local -a extra
    if [[ $MELON_LAUNCH == srun ]]; then
        melon_container_args
        read -r -a extra <<<"${MELON_SRUN_ARGS:-}"
        melon_run srun --mpi="${MELON_SRUN_MPI:-pmix}" --nodes="$MELON_NODES" --ntasks="$MELON_NTASKS" \
            --ntasks-per-node="$MELON_PER_NODE" --kill-on-bad-exit=1 "${MELON_CONTAINER[@]}" "${extra[@]}" "$MELON_PYTHON" "$@"
    else
        local name
        local -a exports=()
        for name in PATH LD_LIBRARY_PATH PYTHONPATH VIRTUAL_ENV TF_CPP_MIN_LOG_LEVEL $(melon_tuning_env); do
            [[ -z ${!name:-} ]] || exports+=(-x "$name")
        done
        read -r -a extra <<<"${MELON_MPIRUN_ARGS:-}"
        melon_run mpirun -np "$MELON_NTASKS" --map-by "ppr:$MELON_PER_NODE:node" --bind-to none "${exports[@]}" "${extra[@]}" \
            "$MELON_PYTHON" "$@"
    fi
}

# melon_launch_one ARGS...: `python ARGS` once (a serial step), in the container when there is one.
melon_launch_one() {
    if [[ $MELON_LAUNCH == srun ]]; then
        melon_container_args
        melon_run srun --nodes=1 --ntasks=1 "${MELON_CONTAINER[@]}" "$MELON_PYTHON" "$@"
    else
        melon_run "$MELON_PYTHON" "$@"
    fi
}

# The official split of MELON_DATA/train.json (unless MELON_SPLIT names one), then data.preprocess into
# the work directory; both skipped when already complete.
melon_preprocess() {
    if [[ -f $MELON_WORKDIR/manifest.json ]]; then
        melon_log "preprocess: reusing $MELON_WORKDIR (the trainers verify it against its manifest)"
        return 0
    fi
    [[ -n ${MELON_DATA:-} ]] || melon_die "preprocess needs MELON_DATA: the folder with train.json and song_meta.json"
    local data split
    data=$(melon_abspath "$MELON_DATA")
    if [[ -n ${MELON_SPLIT:-} ]]; then
        split=$(melon_abspath "$MELON_SPLIT")
    else
        split=$MELON_RUN/split
        if [[ -f $split/answers/val.json ]]; then
            melon_log "split: reusing $split"
        else
            melon_launch_one -m data.split "$data/train.json" --out "$split" --seed "${MELON_SPLIT_SEED:-777}" --force
        fi
    fi
    melon_launch -m data.preprocess --split "$split" --meta "$data" --out "$MELON_WORKDIR"
}

# melon_stages STAGE...: run the stages in order (stage lists may be comma-separated).
melon_stages() {
    local stage
    melon_parse_stages "$(IFS=,; echo "$*")" preprocess
    for stage in "${MELON_STAGE_LIST[@]}"; do
        melon_log "== $stage"
        if [[ $stage == preprocess ]]; then
            melon_preprocess
        else
            melon_trainer_args "$stage" "$MELON_WORKDIR" "$MELON_RUN" "${MELON_INIT:+$(melon_abspath "$MELON_INIT")}"
            melon_launch "${MELON_ARGS[@]}"
        fi
    done
    melon_log "done: $MELON_RUN"
}
