"""The DAE's training speed by output: every item scored each step (full) against the sampled softmax.

    python -m bench.dae_output --work WORKDIR [--np 2] [--steps 15] [--variants NAME ...] [--bytes]

Each variant (:data:`VARIANTS`) runs the real trainer (``horovodrun -np N python hvd_train/dae.py``) on
WORKDIR for two epochs of --steps steps (the first includes graph tracing; validation at the end on 256
tuning questions) with the main job's weight decay, and reads the throughput it reports for its second
epoch; the CPU seconds (user and system) of the whole command come from ``getrusage``. All variants run one
after the other in this one process, so the ratios to the first (the full output, dense allreduce: what
the trainer did before the sampled output) compare like with like. Minutes per pass: the work directory's
training playlists over that throughput. Writes ``bench/results/dae_output_<name of WORKDIR's parent>.json``.
``--bytes`` adds what a rank sends per playlist at 2 ranks under each variant's switch (bench.comm's one
real step; rows: each rank's unique rows, values and indices, allgathered; dense: a ring allreduce).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

from bench.common import results_dir, save_result
from bench.train_speed import trainer_throughput

COMMON = ["train.weight_decay=1.0", "validation.max_questions=256"]
VARIANTS = {
    "full output, dense allreduce": ["loss.output=full", "hardware.sparse_as_dense=true"],
    "sampled output, rows allgathered": ["loss.output=sampled", "hardware.sparse_as_dense=false"],
    "sampled output, densified allreduce": ["loss.output=sampled", "hardware.sparse_as_dense=true"],
}


def cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def results_name(work: Path) -> str:
    return f"dae_output_{work.resolve().parent.name}"


def sent_bytes(work: Path, variants: list[str]) -> int:
    """Each variant's bytes a rank sends per step and per playlist at 2 ranks under its configured switch
    (bench.comm's one real step of rank 0 of 2, in this process), merged into the results file."""
    from bench.comm import one_step, sent_per_rank

    path = results_dir() / f"{results_name(work)}.json"
    result = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"work": str(work), "variants": {}}
    for name in variants:
        step = one_step("dae", work, overrides=[*COMMON, *VARIANTS[name]])
        switch = dict(step["switches"][step["configured_switch"]])
        if step["configured_switch"] == "rows":  # the loop merges each rank's duplicate rows before the allgather
            switch["allgather_bytes"] = sum(t["unique_rows"] * (t["rows_bytes"] // t["lookups"])
                                            for t in step["tensors"] if t["sparse"])
        sent = sent_per_rank(switch, 2)
        row = result["variants"].setdefault(name, {})
        row.update(switch=step["configured_switch"], sent_per_step_at_2=round(sent),
                   sent_per_playlist_at_2=round(sent / step["batch_size"]), batch_per_rank=step["batch_size"])
        print(f"{name}: {row['sent_per_playlist_at_2']:,} bytes per playlist at 2 ranks ({step['configured_switch']})",
              flush=True)
    base = result["variants"][variants[0]]["sent_per_playlist_at_2"]
    for name in variants:
        result["variants"][name]["bytes_over_first"] = round(result["variants"][name]["sent_per_playlist_at_2"] / base, 3)
    save_result(results_name(work), result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dae_output", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--np", type=int, default=2, dest="np_")
    parser.add_argument("--steps", type=int, default=15, help="steps per epoch (two epochs per variant)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--bytes", action="store_true", help="only each variant's bytes per playlist (bench.comm's "
                        "one step in this process), added to the results file")
    args = parser.parse_args(argv)
    if args.bytes:
        return sent_bytes(args.work, args.variants)
    manifest = json.loads((args.work / "manifest.json").read_text(encoding="utf-8"))
    playlists = manifest["records"]["train"]
    rows = {}
    for name in args.variants:
        sets = [*COMMON, *VARIANTS[name], f"train.steps_per_epoch={args.steps}"]
        user, system = cpu_seconds()
        rate = trainer_throughput(args.np_, args.work, 2, args.batch, [x for s in sets for x in ("--set", s)])
        user_after, system_after = cpu_seconds()
        rows[name] = {"overrides": sets, "playlists_per_s": rate, "minutes_per_pass": round(playlists / rate / 60, 1),
                      "user_s": round(user_after - user, 1), "system_s": round(system_after - system, 1)}
        print(f"{name}: {rate:.0f} playlists/s, {rows[name]['minutes_per_pass']} min per pass over {playlists} "
              f"training playlists", flush=True)
    base = rows[args.variants[0]]["playlists_per_s"]
    for row in rows.values():
        row["speed_over_first"] = round(row["playlists_per_s"] / base, 2)
    result = {"work": str(args.work), "np": args.np_, "batch_per_rank": args.batch, "steps_per_epoch": args.steps,
              "sizes": manifest["sizes"], "train_playlists": playlists, "variants": rows}
    previous = results_dir() / f"{results_name(args.work)}.json"
    if previous.is_file():  # keep the bytes measured by --bytes
        for name, row in json.loads(previous.read_text(encoding="utf-8"))["variants"].items():
            result["variants"].setdefault(name, {}).update({k: v for k, v in row.items() if k not in rows.get(name, {})})
    save_result(results_name(args.work), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
