#!/usr/bin/env bash
# Train every model with horovodrun: the DAE, then the title BERT (pretraining, then fine-tuning).
#
#   bash launch/train.sh --work WORKDIR --out RUNDIR [--np N] [-H HOST:SLOTS,... | --hostfile FILE]
#                        [--stages dae,pretrain,finetune] [--gloo | --mpi] [--network-interface IF]
#                        [--fusion-threshold-mb MB] [--cycle-time-ms MS] [--set [STAGE:]KEY=VALUE ...]
#                        [--init PRETRAIN_RUNDIR] [--dae-config FILE] [--title-config FILE]
#                        [--horovodrun-arg ARG ...] [--dry-run]
#
#   --work      work directory written by `python -m data.preprocess` (required)
#   --out       run folder (required): RUNDIR/dae, RUNDIR/title-pretrain, RUNDIR/title-finetune
#   --np        Horovod ranks, one per GPU (default: the slots of -H/--hostfile, else this node's GPUs, else 1)
#   -H          hosts and slots, e.g. -H node1:4,node2:4 (the checkout must be at the same path on every host)
#   --hostfile  a horovodrun host file, one `HOST slots=N` a line
#   --stages    which stages, in order (default dae,pretrain,finetune; word2vec and cnn (mel shards) too)
#   --gloo, --mpi   Horovod's controller (default: horovodrun's choice, MPI when available)
#   --network-interface  NIC for Horovod and NCCL (default: $HOROVOD_GLOO_IFACE when set, else auto)
#   --fusion-threshold-mb, --cycle-time-ms   Horovod tuning; HOROVOD_*/NCCL_* variables (e.g.
#               HOROVOD_FUSION_THRESHOLD, HOROVOD_CYCLE_TIME, NCCL_SOCKET_IFNAME) reach every rank as set
#   --set       trainer override, repeatable: train.epochs=10 (all stages), dae:KEY=VALUE,
#               pretrain:/finetune:/word2vec:/cnn:KEY=VALUE (one stage), title:KEY=VALUE (both title stages)
#   --init      the pretraining run that fine-tuning starts from (default RUNDIR/title-pretrain)
#   --dae-config, --title-config   instead of configs/dae.yaml, configs/title.yaml
#   --horovodrun-arg   one more horovodrun argument, verbatim, repeatable (e.g. --horovodrun-arg=--ssh-port=2222)
#   --dry-run   print the commands, one a line, without running anything
#
# Rerunning the same command resumes every stage from its latest checkpoint.
set -euo pipefail
MELON_START_DIR=$PWD
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$repo/launch/lib.sh"
usage() { melon_usage "$repo/launch/train.sh"; }

work="" out="" np="" hosts="" hostfile="" stages=dae,pretrain,finetune init="" nic=""
hvd_args=()
need() { (($# >= 2)) || melon_die "$1 needs a value"; }
while (($#)); do
    case "$1" in
        --work) need "$@"; work=$2; shift 2 ;;
        --out) need "$@"; out=$2; shift 2 ;;
        --np|-np) need "$@"; np=$2; shift 2 ;;
        -H|--hosts) need "$@"; hosts=$2; shift 2 ;;
        --hostfile|-hostfile) need "$@"; hostfile=$2; shift 2 ;;
        --stages) need "$@"; stages=$2; shift 2 ;;
        --gloo|--mpi) hvd_args+=("$1"); shift ;;
        --network-interface) need "$@"; nic=$2; shift 2 ;;
        --fusion-threshold-mb|--cycle-time-ms) need "$@"; hvd_args+=("$1" "$2"); shift 2 ;;
        --set) need "$@"; melon_add_set "$2"; shift 2 ;;
        --init) need "$@"; init=$2; shift 2 ;;
        --dae-config) need "$@"; MELON_DAE_CONFIG=$(melon_abspath "$2"); shift 2 ;;
        --title-config) need "$@"; MELON_TITLE_CONFIG=$(melon_abspath "$2"); shift 2 ;;
        --horovodrun-arg) need "$@"; hvd_args+=("$2"); shift 2 ;;
        --horovodrun-arg=*) hvd_args+=("${1#*=}"); shift ;;
        --dry-run) MELON_DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; melon_die "unknown argument: $1" ;;
    esac
done
[[ -n $work && -n $out ]] || { usage >&2; melon_die "--work and --out are required"; }
[[ -z $hosts || -z $hostfile ]] || melon_die "give -H or --hostfile, not both"
melon_parse_stages "$stages"
work=$(melon_abspath "$work")
out=$(melon_abspath "$out")
[[ -z $init ]] || init=$(melon_abspath "$init")

# Ranks: as asked, else every slot of the hosts, else one per local GPU, else 1.
slots_total() {  # "host:4,host2" or host file lines "host slots=4" -> total slots (1 per host without a count)
    local total=0 entry slots
    while read -r entry; do
        entry=${entry%%#*}
        [[ -n ${entry// } ]] || continue
        if [[ $entry =~ slots[[:space:]]*=[[:space:]]*([0-9]+) || $entry =~ :([0-9]+)[[:space:]]*$ ]]; then
            slots=${BASH_REMATCH[1]}
        else
            slots=1
        fi
        total=$((total + slots))
    done
    echo "$total"
}
if [[ -n $hostfile ]]; then
    hostfile=$(melon_abspath "$hostfile")
    [[ -f $hostfile ]] || melon_die "no host file $hostfile"
    hvd_args+=(--hostfile "$hostfile")
    np=${np:-$(slots_total <"$hostfile")}
elif [[ -n $hosts ]]; then
    hvd_args+=(-H "$hosts")
    np=${np:-$(tr ',' '\n' <<<"$hosts" | slots_total)}
elif [[ -z $np ]]; then
    np=$( (command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
    ((np > 0)) || np=1
fi
[[ $np =~ ^[1-9][0-9]*$ ]] || melon_die "--np must be a positive integer, got '$np'"
nic=${nic:-${HOROVOD_GLOO_IFACE:-}}
[[ -z $nic ]] || hvd_args+=(--network-interface "$nic")

cd "$repo"
if [[ ${MELON_DRY_RUN:-0} != 1 ]]; then
    # The project's virtual environment when there is one; otherwise the Python on PATH (a container).
    venv=${MELON_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/melon-hvd/venv}
    if [[ -f $venv/bin/activate ]] || ! command -v horovodrun >/dev/null; then
        # shellcheck source=env.sh
        source launch/env.sh
    fi
    export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
fi
melon_log "training ${MELON_STAGE_LIST[*]} with $np Horovod ranks into $out"
melon_log_tuning_env
python=${MELON_PYTHON:-python}
for stage in "${MELON_STAGE_LIST[@]}"; do
    melon_trainer_args "$stage" "$work" "$out" "$init"
    melon_run horovodrun -np "$np" "${hvd_args[@]}" "$python" "${MELON_ARGS[@]}"
done
[[ ${MELON_DRY_RUN:-0} == 1 ]] || melon_log "done: $(for s in "${MELON_STAGE_LIST[@]}"; do printf '%s ' "$out/$(melon_stage_dir "$s")"; done)"
