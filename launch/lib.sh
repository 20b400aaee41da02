# shellcheck shell=bash
# Helpers shared by launch/train.sh and launch/slurm/*.sbatch (through launch/slurm/common.sh); sourced,
# never run. It is the one place that knows the trainers' command lines:
#
#   stage      command (after the Python interpreter)                           run directory
#   dae        hvd_train/dae.py --work W --out RUN/dae                         RUN/dae
#   pretrain   hvd_train/title.py pretrain --work W --out RUN/title-pretrain   RUN/title-pretrain
#   finetune   hvd_train/title.py finetune --work W --out RUN/title-finetune   RUN/title-finetune
#              --init PRETRAIN_RUN (default RUN/title-pretrain)
#   word2vec   hvd_train/word2vec.py --work W --out RUN/word2vec               RUN/word2vec
#   cnn        hvd_train/cnn.py --work W --out RUN/cnn (mel shards needed)      RUN/cnn
#
# Overrides: [STAGE:]KEY=VALUE, e.g. train.epochs=10 (every stage), dae:loss.artist_weight=0.2 (the DAE
# only), title:train.warmup_steps=2000 (pretrain and finetune). MELON_DAE_CONFIG / MELON_TITLE_CONFIG /
# MELON_WORD2VEC_CONFIG / MELON_CNN_CONFIG replace configs/dae.yaml / configs/title.yaml /
# configs/word2vec.yaml / configs/cnn.yaml.
# MELON_DRY_RUN=1 prints commands instead of running them.
set -euo pipefail

MELON_TRAINER_STAGES=(dae pretrain finetune word2vec cnn)
MELON_SETS=()

# The comment block at the top of a script (after the shebang, #SBATCH and shellcheck lines): its --help.
melon_usage() {
    awk 'NR == 1 && /^#!/ { next } /^#SBATCH|^# shellcheck/ { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$1"
}

melon_log() { printf '[melon] %s\n' "$*" >&2; }
melon_die() { printf '[melon] ERROR: %s\n' "$*" >&2; exit 2; }

# Absolute form of a path given relative to the directory the user started from ($1 may be absolute).
melon_abspath() {
    if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "${MELON_START_DIR:-$PWD}/$1"; fi
}

# melon_parse_stages LIST [EXTRA...]: check a comma-separated stage list against the trainer stages
# (and EXTRA ones, e.g. preprocess); sets MELON_STAGE_LIST.
melon_parse_stages() {
    local list=$1 stage s known
    shift
    local -a allowed=("$@" "${MELON_TRAINER_STAGES[@]}")
    IFS=, read -r -a MELON_STAGE_LIST <<<"$list"
    ((${#MELON_STAGE_LIST[@]})) || melon_die "no stages given"
    for stage in "${MELON_STAGE_LIST[@]}"; do
        known=0
        for s in "${allowed[@]}"; do [[ $stage == "$s" ]] && known=1; done
        ((known)) || melon_die "unknown stage '$stage' in '$list' (stages: $(IFS=,; echo "${allowed[*]}"))"
    done
}

# Record a trainer override [STAGE:]KEY=VALUE (STAGE: dae, pretrain, finetune, title, word2vec or cnn).
melon_add_set() {
    local spec=$1 key=${1%%=*}
    [[ $spec == *=* && -n $key ]] || melon_die "--set '$spec': expected [STAGE:]KEY=VALUE, e.g. train.epochs=10"
    if [[ $key == *:* ]]; then
        case ${key%%:*} in
            dae|pretrain|finetune|title|word2vec|cnn) ;;
            *) melon_die "--set '$spec': unknown stage '${key%%:*}' (dae, pretrain, finetune, title, word2vec, cnn)" ;;
        esac
    fi
    MELON_SETS+=("$spec")
}

melon_stage_dir() {
    case $1 in
        dae) echo dae ;;
        pretrain) echo title-pretrain ;;
        finetune) echo title-finetune ;;
        word2vec) echo word2vec ;;
        cnn) echo cnn ;;
        *) melon_die "unknown stage '$1'" ;;
    esac
}

# melon_trainer_args STAGE WORK RUN [INIT]: sets MELON_ARGS to the trainer's script and arguments.
melon_trainer_args() {
    local stage=$1 work=$2 run=$3 init=${4:-} spec key target
    case $stage in
        dae) MELON_ARGS=(hvd_train/dae.py); [[ -z ${MELON_DAE_CONFIG:-} ]] || MELON_ARGS+=(--config "$MELON_DAE_CONFIG") ;;
        pretrain|finetune)
            MELON_ARGS=(hvd_train/title.py "$stage")
            [[ -z ${MELON_TITLE_CONFIG:-} ]] || MELON_ARGS+=(--config "$MELON_TITLE_CONFIG") ;;
        word2vec)
            MELON_ARGS=(hvd_train/word2vec.py)
            [[ -z ${MELON_WORD2VEC_CONFIG:-} ]] || MELON_ARGS+=(--config "$MELON_WORD2VEC_CONFIG") ;;
        cnn) MELON_ARGS=(hvd_train/cnn.py); [[ -z ${MELON_CNN_CONFIG:-} ]] || MELON_ARGS+=(--config "$MELON_CNN_CONFIG") ;;
        *) melon_die "unknown stage '$stage'" ;;
    esac
    MELON_ARGS+=(--work "$work" --out "$run/$(melon_stage_dir "$stage")")
    [[ $stage != finetune ]] || MELON_ARGS+=(--init "${init:-$run/title-pretrain}")
    for spec in "${MELON_SETS[@]}"; do
        key=${spec%%=*}
        if [[ $key == *:* ]]; then
            target=${key%%:*}
            [[ $target == "$stage" || ($target == title && ($stage == pretrain || $stage == finetune)) ]] || continue
            spec=${spec#*:}
        fi
        MELON_ARGS+=(--set "$spec")
    done
}

# Names of the exported Horovod/NCCL variables (tuning: HOROVOD_FUSION_THRESHOLD, HOROVOD_CYCLE_TIME,
# HOROVOD_GLOO_IFACE, NCCL_SOCKET_IFNAME, ...); every launcher hands them to every rank. Not the
# *_VERSION labels that NVIDIA's images export (NCCL_VERSION=2.28.3-1): they tune nothing.
melon_tuning_env() {
    compgen -e | grep -E '^(HOROVOD|NCCL)_' | grep -v '_VERSION$' || true
}

melon_log_tuning_env() {
    local name line=""
    for name in $(melon_tuning_env); do line+=" $name=${!name}"; done
    [[ -z $line ]] || melon_log "passed to every rank:$line"
}

# One command line, shell-quoted (only where needed) so that it can be pasted back into a shell.
melon_quote() {
    local arg out=""
    for arg in "$@"; do
        if [[ $arg =~ ^[][A-Za-z0-9_@%+=:,./^-]+$ ]]; then out+="$arg "; else out+="$(printf '%q' "$arg") "; fi
    done
    printf '%s\n' "${out% }"
}

# Run a command, or with MELON_DRY_RUN=1 print it on stdout instead.
melon_run() {
    if [[ ${MELON_DRY_RUN:-0} == 1 ]]; then
        melon_quote "$@"
    else
        melon_log "running: $(melon_quote "$@")"
        "$@"
    fi
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then  # run, not sourced: the only thing it does is explain itself
    melon_usage "$0"
    exit 0
fi
