"""Where a training run's CPU time goes: wall, user and system seconds and page faults of each trainer's short
run, at -np 1 and -np 2, under each memory allocator and MPI's polling settings.

    python -m bench.cpu --work WORKDIR [--trainers dae dae_main_job dae_sampled title_pretrain title_finetune
                        word2vec cnn] [--np 1 2] [--steps 30] [--epochs 1]
                        [--settings glibc jemalloc tcmalloc tcmalloc+mpi_yield default]
                        [--env KEY=VALUE ...] [--controller mpi|gloo] [--name cpu]

Each run is the real trainer under ``horovodrun -np N`` on WORKDIR: one epoch (--epochs) of --steps steps
(0: a full pass), then its validation; the weight checksums it logs are kept (equal: the same training).
The figures are ``getrusage(RUSAGE_CHILDREN)`` differences around the command, so they cover
horovodrun, mpirun and every rank: user and system CPU seconds, minor page faults (a fresh page touched:
the kernel zeroes and maps it) and voluntary/involuntary context switches. :data:`SETTINGS` are compared:
glibc's malloc as the process starts with it; jemalloc or tcmalloc put in front of it with ``LD_PRELOAD``
(Debian's libjemalloc2 and libtcmalloc-minimal4), each with OpenMPI's and Horovod's polling defaults
(hvd_train/common.py's ``LIBRARY_POLLING``, set explicitly so that the trainers keep them);
"tcmalloc+mpi_yield": tcmalloc and hvd_train/common.py's ``CPU_POLLING`` set by hand; "default": what a
user gets (launch/env.sh preloads tcmalloc, the polling variables are left unset and the trainers choose
them, ``polling_defaults``). All runs happen one after the other in this one process; compare them as
ratios. ``--env`` adds settings to every run (recorded). Writes ``bench/results/cpu.json`` (``--name``:
another name).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, save_result
from hvd_train.common import CPU_POLLING, LIBRARY_POLLING

LIBRARIES = Path(f"/usr/lib/{os.uname().machine}-linux-gnu")
ALLOCATORS = {"glibc": None, "jemalloc": LIBRARIES / "libjemalloc.so.2", "tcmalloc": LIBRARIES / "libtcmalloc_minimal.so.4"}
# setting -> (allocator, polling variables set for the run; None: left unset, so the trainers choose)
SETTINGS = {name: (name, LIBRARY_POLLING) for name in ALLOCATORS}
SETTINGS["tcmalloc+mpi_yield"] = ("tcmalloc", CPU_POLLING)
SETTINGS["default"] = ("tcmalloc", None)  # what launch/env.sh and the trainers (polling_defaults) choose
TRAINERS = {  # name -> the trainer's command after the python executable, and its short run's overrides
    "dae": (["hvd_train/dae.py"], ["validation.max_questions=512"]),
    # the main job's DAE stage (launch/quickstart.sh's short schedule): with --epochs 5 --steps 0
    "dae_main_job": (["hvd_train/dae.py"], ["train.warmup_steps=60", "train.lr_multiplier=0.15",
                                            "train.weight_decay=1.0", "validation.every_epochs=1"]),
    "dae_sampled": (["hvd_train/dae.py"], ["validation.max_questions=512", "loss.output=sampled",
                                           "hardware.sparse_as_dense=false"]),
    "title_finetune": (["hvd_train/title.py", "finetune"], []),
    "title_pretrain": (["hvd_train/title.py", "pretrain"], []),
    "word2vec": (["hvd_train/word2vec.py"], []),
    "cnn": (["hvd_train/cnn.py"], []),
}


def environment(setting: str, extra: dict) -> dict:
    """The environment of a run under ``setting`` (:data:`SETTINGS`): launch/env.sh's own choices unset first."""
    allocator, polling = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", *CPU_POLLING)}
    env.update({**(polling or {}), **extra})
    library = ALLOCATORS[allocator]
    if library is not None:
        if not library.exists():
            raise SystemExit(f"{library} is missing: apt-get install libjemalloc2 libtcmalloc-minimal4")
        env["LD_PRELOAD"] = str(library)
    return env


def measure(trainer: str, np_: int, setting: str, work: Path, steps: int, extra_env: dict,
            controller: str = "mpi", epochs: int = 1) -> dict:
    """One short run of ``trainer``: wall, user and system seconds, page faults and context switches."""
    script, extra = TRAINERS[trainer]
    sets = [f"train.epochs={epochs}", *([f"train.steps_per_epoch={steps}"] if steps else []), *extra]
    with tempfile.TemporaryDirectory() as out:
        cmd = ["horovodrun", "-np", str(np_), f"--{controller}", sys.executable, str(REPO / script[0]), *script[1:],
               "--work", str(work), "--out", out, *[a for s in sets for a in ("--set", s)]]
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=environment(setting, extra_env))
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    checksums = re.search(r"weight checksums by rank: (\[[^\]]*\])", proc.stdout)
    return {"weight_checksums": checksums.group(1) if checksums else None,
            "wall_s": round(wall, 1), "user_s": round(user, 1), "system_s": round(system, 1),
            "system_share": round(system / max(user + system, 1e-9), 3),
            "minor_faults": after.ru_minflt - before.ru_minflt,
            "voluntary_switches": after.ru_nvcsw - before.ru_nvcsw,
            "involuntary_switches": after.ru_nivcsw - before.ru_nivcsw}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--trainers", nargs="+", choices=list(TRAINERS), default=["dae", "dae_sampled"])
    parser.add_argument("--np", nargs="+", type=int, default=[1, 2], dest="nps")
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch (0: full passes)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=["glibc", "default"])
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE set for every run (e.g. OpenMPI's "
                        "OMPI_MCA_mpi_yield_when_idle=1 or HOROVOD_CYCLE_TIME=5)")
    parser.add_argument("--controller", choices=["mpi", "gloo"], default="mpi", help="horovodrun's --mpi or --gloo")
    parser.add_argument("--name", default="cpu", help="results file: bench/results/NAME.json")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    rows = []
    for trainer in args.trainers:
        for np_ in args.nps:
            for setting in args.settings:
                row = {"trainer": trainer, "np": np_, "setting": setting, "controller": args.controller,
                       **measure(trainer, np_, setting, args.work, args.steps, extra_env, args.controller,
                                args.epochs)}
                rows.append(row)
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    for row in rows:  # the wall time against glibc's in the same run
        base = next((r for r in rows if (r["trainer"], r["np"], r["setting"]) == (row["trainer"], row["np"], "glibc")),
                    None)
        row["wall_over_glibc"] = round(row["wall_s"] / base["wall_s"], 3) if base else None
    save_result(args.name, {"work": str(args.work), "steps": args.steps, "epochs": args.epochs,
                            "cpus": os.cpu_count(), "env": extra_env, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
