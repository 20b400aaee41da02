#!/usr/bin/env bash
# The main job, end to end, on one machine: setup -> data -> official split -> preprocessing (mpirun) ->
# DAE, title BERT, Word2Vec and mel CNN training (horovodrun) -> ensemble inference -> evaluation table.
#
#   bash launch/quickstart.sh [--scale tiny|small|melon] [--seed N] [--data DIR] [--out DIR] [--np N]
#                             [--dae-epochs N] [--pretrain-epochs N] [--finetune-epochs N] [--word2vec-epochs N]
#                             [--cnn-epochs N] [--steps-per-epoch N] [--set [STAGE:]KEY=VALUE ...]
#
#   --scale   size of the embedded synthetic data set (default small)
#   --seed    generator seed (default 0)
#   --data    use a folder with the real Melon files (train.json, song_meta.json, ...) instead; with
#             arena_mel_*.tar (or arena_mel/) in it the audio stages run on them, else they are skipped
#             (the synthetic data set comes with a spectrogram for every song: data.synth --mel all)
#   --out     run folder (default runs/quickstart-SCALE); finished stages found there are reused
#   --np      MPI/Horovod ranks for preprocessing and training (default 2)
#   --dae-epochs, --pretrain-epochs, --finetune-epochs
#             training epochs (defaults 5, 20, 3: a short schedule for one machine, with short warmups;
#             configs/dae.yaml and configs/title.yaml hold the full 300/100-epoch schedules; 20 pretraining
#             epochs, not 3, make fine-tuning beat fine-tuning from scratch: bench/title_pretraining.py;
#             the DAE warms up over its first 60 steps to a 2.5e-3 peak at np 2, with decoupled weight decay
#             1.0 on its item table: bench/dae_curves.py)
#   --word2vec-epochs
#             Word2Vec epochs (default 10; configs/word2vec.yaml holds 20)
#   --cnn-epochs
#             mel CNN epochs (default 3; configs/cnn.yaml holds 12); its audio index feeds the ensemble's
#             audio member (inference/audio_member.py)
#   --steps-per-epoch
#             cap every trainer's epoch at N steps (train.steps_per_epoch; default: full passes), for
#             time-budget runs at melon scale, where one DAE pass takes most of an hour on 2 CPU cores
#   --set     a trainer override, repeatable, as in launch/train.sh: train.seed=1 (every stage),
#             dae:KEY=VALUE, pretrain:/finetune:/word2vec:/cnn:KEY=VALUE (one stage), title:KEY=VALUE (both
#             title stages); applied after the short schedule above, so it can change it
#
# Every stage prints where its outputs go; $out/timings.json holds the wall seconds of each stage's last
# run. Trainers resume from their checkpoints when rerun, so a rerun (or a run with more epochs) continues
# where the last one stopped.
set -euo pipefail
peer=playlist_cf  # the strongest peer on the tuning half of small (bench/peers.py), printed beside the ensemble
scale=small seed=0 data="" out="" np=2 dae_epochs=5 pretrain_epochs=20 finetune_epochs=3 word2vec_epochs=10 cnn_epochs=3 budget=()
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib.sh
source launch/lib.sh
usage() { melon_usage launch/quickstart.sh; }
user_sets=()
need() { (($# >= 2)) || melon_die "$1 needs a value"; }
while (($#)); do
    case "$1" in
        --scale) need "$@"; scale=$2; shift 2 ;;
        --seed) need "$@"; seed=$2; shift 2 ;;
        --data) need "$@"; data=$2; shift 2 ;;
        --out) need "$@"; out=$2; shift 2 ;;
        --np) need "$@"; np=$2; shift 2 ;;
        --dae-epochs) need "$@"; dae_epochs=$2; shift 2 ;;
        --pretrain-epochs) need "$@"; pretrain_epochs=$2; shift 2 ;;
        --finetune-epochs) need "$@"; finetune_epochs=$2; shift 2 ;;
        --word2vec-epochs) need "$@"; word2vec_epochs=$2; shift 2 ;;
        --cnn-epochs) need "$@"; cnn_epochs=$2; shift 2 ;;
        --steps-per-epoch) need "$@"; budget=("train.steps_per_epoch=$2"); shift 2 ;;
        --set) need "$@"; user_sets+=("$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
# the short schedule first, then --steps-per-epoch and the user's --set (a later override wins)
for spec in "dae:train.epochs=$dae_epochs" dae:train.warmup_steps=60 dae:train.lr_multiplier=0.15 dae:train.weight_decay=1.0 \
    "pretrain:train.epochs=$pretrain_epochs" pretrain:train.warmup_steps=300 \
    "finetune:train.epochs=$finetune_epochs" finetune:train.warmup_steps=300 validation.every_epochs=1 \
    "word2vec:train.epochs=$word2vec_epochs" "cnn:train.epochs=$cnn_epochs" \
    ${budget[@]+"${budget[@]}"} ${user_sets[@]+"${user_sets[@]}"}; do
    melon_add_set "$spec"
done
out=${out:-runs/quickstart-$scale}
started=$SECONDS
# shellcheck disable=SC1091
source launch/env.sh
stage() { printf '\n== [%dm%02ds] %s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$*" >&2; }
# timed NAME COMMAND...: runs COMMAND and records its wall seconds as NAME in $out/timings.json
timed() {
    local name=$1 t0=$SECONDS
    shift
    "$@"
    mkdir -p "$out"
    python - "$out/timings.json" "$name" $((SECONDS - t0)) <<'PY'
import json, os, sys
path, name, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
timings = json.load(open(path)) if os.path.exists(path) else {}
timings[name] = seconds
json.dump(timings, open(path + ".tmp", "w"), indent=1)
os.replace(path + ".tmp", path)
PY
}

if [[ -z "$data" ]]; then
    data=$out/data
    if [[ -f $data/synth_info.json ]] && python -c 'import json,sys; i=json.load(open(sys.argv[1])); sys.exit(not (i["scale"]==sys.argv[2] and i["seed"]==int(sys.argv[3]) and i.get("mel", {}).get("songs") == "all"))' "$data/synth_info.json" "$scale" "$seed"; then
        stage "synthetic data ($scale, seed $seed): reusing $data"
    else
        stage "synthetic Melon data ($scale, seed $seed) with a mel-spectrogram for every song -> $data"
        timed generate python -m data.synth --scale "$scale" --seed "$seed" --out "$data" --mel all --force
    fi
fi
mel=()  # data.preprocess --mel DIR when the data has spectrograms: the audio stages run
if compgen -G "$data/arena_mel_*.tar" >/dev/null || [[ -d $data/arena_mel ]]; then
    mel=(--mel "$data")
else
    stage "no arena_mel_*.tar or arena_mel/ in $data: the mel CNN and the audio member are skipped"
fi
split=$out/split
if [[ -f $split/answers/val.json ]]; then
    stage "official split: reusing $split"
else
    stage "official split of $data/train.json -> $split"
    timed split python -m data.split "$data/train.json" --out "$split" --seed 777
fi
stage "statistics of $data"
python -m data.stats "$data"

work=$out/work
if python -c 'import sys; from data.workdir import verify_workdir; m = verify_workdir(sys.argv[1]); sys.exit(("mel" in m) != (sys.argv[2] == "1"))' "$work" "${#mel[@]}" 2>/dev/null; then
    stage "preprocessing: reusing $work (verified against its manifest)"
else
    stage "preprocessing with mpirun -np $np -> $work (vocabularies, tokenizer, TFRecord shards)"
    timed preprocess mpirun -np "$np" --oversubscribe python -m data.preprocess --split "$split" --meta "$data" --out "$work" \
        ${mel[@]+"${mel[@]}"} --force
fi

# Short schedules need short warmups (the full schedules warm up over 4000 steps). The DAE's fits its run:
# one epoch of warmup (60 steps at np 2 on small) to a peak of 2.5e-3, then the step^-0.5 decay
# (bench/dae_curves.py: a 300-step warmup, longer than the run, kept the rate rising while validation fell).
# train STAGE: horovodrun -np N with the trainer's command line from launch/lib.sh (RUN = $out)
train() {
    melon_trainer_args "$1" "$work" "$out"
    horovodrun -np "$np" python "${MELON_ARGS[@]}"
}
stage "DAE: horovodrun -np $np, $dae_epochs epochs -> $out/dae"
timed dae train dae
stage "title BERT pretraining (masked pieces): horovodrun -np $np, $pretrain_epochs epochs -> $out/title-pretrain"
timed title_pretrain train pretrain
stage "title BERT fine-tuning: horovodrun -np $np, $finetune_epochs epochs -> $out/title-finetune"
timed title_finetune train finetune
stage "Word2Vec (songs, tags, title pieces): horovodrun -np $np, $word2vec_epochs epochs -> $out/word2vec"
timed word2vec train word2vec
audio=()  # --audio RUN for the blend and the ensemble
if ((${#mel[@]})); then
    stage "mel CNN (tags from audio): horovodrun -np $np, $cnn_epochs epochs -> $out/cnn"
    timed cnn train cnn
    stage "audio index (every song's audio embedding and predicted tags) -> $out/cnn/audio_index.npz"
    timed audio_index python -m inference.audio index --work "$work" --model "$out/cnn"
    read -r _ flag folder < <(python -m inference.members --audio)  # inference/members.py: NAME FLAG FOLDER
    audio=("$flag" "$out/$folder")
fi

# the neighbour kinds (inference/members.py --neighbours: KIND FLAG FOLDER per line), each built into its folder,
# timed under its folder's name, and given to the ensemble by its flag
mapfile -t neighbour_kinds < <(python -m inference.members --neighbours)
neighbours=()
for line in "${neighbour_kinds[@]}"; do
    read -r kind flag folder <<<"$line"
    stage "neighbour member $kind -> $out/$folder"
    timed "$folder" python -m inference.neighbours --work "$work" --out "$out/$folder" --kind "$kind"
    neighbours+=("$flag" "$out/$folder")
done

questions=$split/questions/val.json answers=$split/answers/val.json
# the trained members (inference/members.py: NAME FLAG FOLDER per line), then the neighbour members
trained=() models=()
while read -r name flag folder; do
    trained+=("$name") models+=("$flag" "$out/$folder")
done < <(python -m inference.members)
models+=("${neighbours[@]}")
stage "the learned ranker over every member (inference/ranker.py), and the audio member's tail slots, fitted on the tuning half of $questions -> $out/blend.json"
timed blend python -m inference.fit_blend --questions "$questions" --answers "$answers" --work "$work" "${models[@]}" \
    ${audio[@]+"${audio[@]}"} --out "$out/blend.json"
mkdir -p "$out/results" "$out/scores"
stage "recommendations for $questions -> $out/results/"
timed popular python -m inference.popular --train "$split/orig/train.json" --questions "$questions" --out "$out/results/popular.json"
timed ensemble python -m inference --questions "$questions" --work "$work" "${models[@]}" --blend "$out/blend.json" \
    ${audio[@]+"${audio[@]}"} --out "$out/results/ensemble.json"
for i in "${!trained[@]}"; do  # each trained member alone
    python -m inference --questions "$questions" --work "$work" "${models[@]:2*i:2}" \
        --out "$out/results/${trained[i]}.json" --no-progress
done
stage "the strongest classical peer, $peer (bench/peers.py, its tuned defaults) -> $out/results/$peer.json"
timed peer python -m bench.peers "$peer" --split "$split" --meta "$data/song_meta.json" --out "$out/results/$peer.json"

stage "evaluation on the report half of $answers (nothing was tuned on it) -> $out/scores/"
tables=()
for model in ensemble "${trained[@]}" "$peer" popular; do
    python -m evaluate --gt "$answers" --rec "$out/results/$model.json" --questions "$questions" --part report \
        --out "$out/scores/$model.json" >/dev/null
    tables+=("$model=$out/scores/$model.json")
done
python -m evaluate.table "${tables[@]}" | tee "$out/scores/table.md"
stage "done: results in $out/results/, scores in $out/scores/ (table.md)"
