#!/usr/bin/env bash
# The main job, end to end: data -> official split -> models -> results -> evaluation.
#
#   bash launch/main.sh [--scale tiny|small|melon] [--seed N] [--data DIR] [--out DIR] [--np N]
#                       [--dae-epochs N]
#
#   --scale   size of the embedded synthetic data set (default small)
#   --seed    generator seed (default 0)
#   --data    use a folder with the real Melon files (train.json, song_meta.json, ...) instead
#   --out     run folder (default runs/main-SCALE); finished steps found there are reused
#   --np      MPI/Horovod ranks for the parallel steps (default 2)
#   --dae-epochs  DAE training epochs (default 2, a demonstration; configs/dae.yaml has the 300-epoch schedule)
#
# Models today: the popularity baseline and the DAE (horovodrun); the title BERT and the ensemble
# inference join this same command as they land.
set -euo pipefail
scale=small seed=0 data="" out="" np=2 dae_epochs=2
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while (($#)); do
    case "$1" in
        --scale) scale=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --data) data=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --np) np=$2; shift 2 ;;
        --dae-epochs) dae_epochs=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${out:-runs/main-$scale}
# shellcheck disable=SC1091
source launch/env.sh
step() { printf '\n== %s\n' "$*" >&2; }

if [[ -z "$data" ]]; then
    data=$out/data
    if [[ -f $data/synth_info.json ]] && python -c 'import json,sys; i=json.load(open(sys.argv[1])); sys.exit(not (i["scale"]==sys.argv[2] and i["seed"]==int(sys.argv[3])))' "$data/synth_info.json" "$scale" "$seed"; then
        step "synthetic data ($scale, seed $seed): reusing $data"
    else
        step "generating synthetic Melon data ($scale, seed $seed) into $data"
        python -m data.synth --scale "$scale" --seed "$seed" --out "$data" --force
    fi
fi
split=$out/split
if [[ -f $split/answers/val.json ]]; then
    step "official split: reusing $split"
else
    step "official split of $data/train.json into $split"
    python -m data.split "$data/train.json" --out "$split" --seed 777
fi
step "statistics of $data"
python -m data.stats "$data"

work=$out/work
if python -c 'import sys; from data.preprocess import verify_workdir; verify_workdir(sys.argv[1])' "$work" 2>/dev/null; then
    step "preprocessing: reusing $work (verified against its manifest)"
else
    step "preprocessing with $np MPI ranks into $work (vocabularies, title tokenizer, TFRecord shards)"
    mpirun -np "$np" --oversubscribe python -m data.preprocess --split "$split" --meta "$data" --out "$work" --force
fi

mkdir -p "$out/results" "$out/scores"
step "popularity baseline"
python -m inference.popular --train "$split/orig/train.json" --questions "$split/questions/val.json" --out "$out/results/popular.json"

step "DAE: horovodrun -np $np, $dae_epochs epochs (resumes from $out/dae/checkpoints when there)"
# A short run needs a short warmup: 600 steps instead of the 300-epoch schedule's 4000.
horovodrun -np "$np" python hvd_train/dae.py --work "$work" --out "$out/dae" --set train.epochs="$dae_epochs" \
    --set train.warmup_steps=600 --set validation.every_epochs=2

step "evaluation on $split/answers/val.json"
for model in popular dae; do
    results=$out/results/$model.json
    [[ $model == dae ]] && cp "$out/dae/validation_results.json" "$results"
    python -m evaluate --gt "$split/answers/val.json" --rec "$results" --questions "$split/questions/val.json" --json >"$out/scores/$model.json"
    echo "-- $model" >&2
    python -m evaluate --gt "$split/answers/val.json" --rec "$results" --questions "$split/questions/val.json"
done
echo "scores written to $out/scores/" >&2
