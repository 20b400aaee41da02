"""The launch scripts: lint-clean (shellcheck, hadolint), strict, answering --help; the exact horovodrun
commands of launch/train.sh (one node, -H, host file) and the exact srun/mpirun commands of the Slurm
scripts, run with bash under a simulated Slurm job (MELON_DRY_RUN=1); and real two-rank DAE trainings
started by launch/train.sh and by launch/slurm/dae.sbatch."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

LAUNCH = REPO / "launch"
SLURM = LAUNCH / "slurm"
SBATCH = sorted(SLURM.glob("*.sbatch"))
SCRIPTS = sorted(LAUNCH.glob("*.sh")) + sorted(SLURM.glob("*.sh")) + SBATCH
SOURCED = {LAUNCH / "env.sh", LAUNCH / "lib.sh", SLURM / "common.sh"}  # helpers that scripts source
FAST = ["train.batch_size=64", "train.warmup_steps=20", "validation.every_epochs=1", "model.hidden=48",
        "model.ffn=96", "validation.batch_size=128", "train.epochs=1"]


def tool(name: str) -> str:
    """A linter installed by launch/setup.sh: on PATH, or next to this Python (the project's venv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} not found: run the tests with `bash launch/test.sh`"
    return found


def bash(script: Path, *args, env: dict | None = None, cwd: Path = REPO, check: bool = True,
         timeout: int = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(script), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"bash {script} {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def commands(proc: subprocess.CompletedProcess) -> list[list[str]]:
    """A dry run's stdout: one shell-quoted command a line."""
    return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------- lint, --help

def test_every_script_passes_shellcheck():
    assert len(SBATCH) == 4 and (LAUNCH / "train.sh") in SCRIPTS
    proc = subprocess.run([tool("shellcheck"), *map(str, SCRIPTS)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(LAUNCH)))
def test_every_script_is_strict_and_answers_help(script):
    text = script.read_text(encoding="utf-8")
    if script == LAUNCH / "env.sh":  # sourced into interactive shells, where `set -e` would stay on
        assert not re.search(r"^\s*set -[a-z]*e", text, re.M) and "No `set -euo pipefail` here" in text
    else:
        assert re.search(r"^set -euo pipefail$", text, re.M), f"{script}: no set -euo pipefail"
    if script.suffix == ".sbatch":
        lines = text.splitlines()
        assert "# shellcheck shell=bash" in lines
        first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
        assert all(i < first_command for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    proc = bash(script, "--help", env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")})
    assert proc.stdout.strip() and "set -euo" not in proc.stdout and "#SBATCH" not in proc.stdout


def test_dockerfile_passes_hadolint_and_installs_only_what_ngc_lacks_pinned_like_pyproject():
    proc = subprocess.run([tool("hadolint"), "--failure-threshold", "style", "Dockerfile.horovod"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    text = (REPO / "Dockerfile.horovod").read_text(encoding="utf-8")
    assert re.search(r"^FROM nvcr\.io/nvidia/tensorflow:25\.02-tf2-py3$", text, re.M)
    pins = {d.split("==")[0]: d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    installed = set(re.findall(r"\b([a-z0-9]+==[0-9][0-9.]*)", text))
    assert installed == {pins[n] for n in ("mpi4py", "sentencepiece", "tqdm", "pyyaml")}
    assert "tensorflow==" not in text and "horovod==" not in text  # the base image's own
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", "runs"} <= set(ignored)


# ------------------------------------------------------------------------------------ launch/train.sh

def train_dry(*args, env_extra: dict | None = None, cwd: Path = REPO, check: bool = True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "NCCL_", "MELON_"))}
    env.update(env_extra or {})
    return bash(LAUNCH / "train.sh", "--dry-run", *args, env=env, cwd=cwd, check=check)


def test_train_dry_run_on_one_node_runs_the_three_stages_with_stage_overrides(tmp_path):
    work, out = tmp_path / "work", tmp_path / "run"
    proc = train_dry("--work", work, "--out", out, "--np", 2, "--set", "train.epochs=3",
                     "--set", "dae:loss.artist_weight=0.2", "--set", "title:train.warmup_steps=7",
                     "--set", "finetune:loss.tag_weight=0.3")
    hvd = ["horovodrun", "-np", "2", "python"]
    assert commands(proc) == [
        hvd + ["hvd_train/dae.py", "--work", str(work), "--out", f"{out}/dae", "--set", "train.epochs=3",
               "--set", "loss.artist_weight=0.2"],
        hvd + ["hvd_train/title.py", "pretrain", "--work", str(work), "--out", f"{out}/title-pretrain",
               "--set", "train.epochs=3", "--set", "train.warmup_steps=7"],
        hvd + ["hvd_train/title.py", "finetune", "--work", str(work), "--out", f"{out}/title-finetune",
               "--init", f"{out}/title-pretrain", "--set", "train.epochs=3", "--set", "train.warmup_steps=7",
               "--set", "loss.tag_weight=0.3"],
    ]
    assert not work.exists() and not out.exists()  # a dry run touches nothing


def test_train_dry_run_across_hosts_counts_their_slots_and_passes_the_tuning():
    proc = train_dry("--work", "/w", "--out", "/r", "-H", "node1:4,node2:4", "--stages", "dae", "--gloo",
                     "--network-interface", "ib0", "--fusion-threshold-mb", 64, "--cycle-time-ms", 2,
                     env_extra={"HOROVOD_CYCLE_TIME": "3.5", "NCCL_SOCKET_IFNAME": "ib0", "NCCL_VERSION": "2.28.3-1"})
    assert commands(proc) == [["horovodrun", "-np", "8", "--gloo", "--fusion-threshold-mb", "64", "--cycle-time-ms",
                               "2", "-H", "node1:4,node2:4", "--network-interface", "ib0", "python",
                               "hvd_train/dae.py", "--work", "/w", "--out", "/r/dae"]]
    assert "passed to every rank: HOROVOD_CYCLE_TIME=3.5 NCCL_SOCKET_IFNAME=ib0\n" in proc.stderr  # no NCCL_VERSION label
    # the Gloo interface from the environment, and an explicit --np below the slots
    (cmd,) = commands(train_dry("--work", "/w", "--out", "/r", "-H", "a:2,b", "--np", 2, "--stages", "pretrain",
                                env_extra={"HOROVOD_GLOO_IFACE": "eth1"}))
    assert cmd[:7] == ["horovodrun", "-np", "2", "-H", "a:2,b", "--network-interface", "eth1"]


def test_train_dry_run_with_a_hostfile_and_relative_paths(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the cluster\ngpu01 slots=4\n\ngpu02   slots = 2  # half a node\ngpu03\n")
    proc = train_dry("--work", "w", "--out", "r", "--hostfile", "hosts", "--stages", "pretrain,finetune",
                     "--init", "/pre", "--title-config", "t.yaml", cwd=tmp_path)
    pre, fine = commands(proc)
    assert pre == ["horovodrun", "-np", "7", "--hostfile", str(hostfile), "python", "hvd_train/title.py", "pretrain",
                   "--config", f"{tmp_path}/t.yaml", "--work", f"{tmp_path}/w", "--out", f"{tmp_path}/r/title-pretrain"]
    assert fine[-2:] == ["--init", "/pre"] and fine[:5] == pre[:5]


@pytest.mark.parametrize("args, words", [
    (["--work", "w", "--out", "r", "--stages", "dae,tilte"], "unknown stage 'tilte'"),
    (["--out", "r"], "--work and --out are required"),
    (["--work", "w", "--out", "r", "--set", "epochs"], "expected [STAGE:]KEY=VALUE"),
    (["--work", "w", "--out", "r", "--set", "bert:train.epochs=1"], "unknown stage 'bert'"),
    (["--work", "w", "--out", "r", "--np", "0"], "--np must be a positive integer"),
    (["--work", "w", "--out", "r", "-H", "a:1", "--hostfile", "f"], "not both"),
    (["--work", "w", "--out", "r", "--hostfile", "/no/such/file"], "no host file"),
    (["--work", "w", "--out", "r", "--npp", "2"], "unknown argument: --npp"),
])
def test_train_refuses_bad_arguments(args, words):
    proc = train_dry(*args, check=False)
    assert proc.returncode == 2 and words in proc.stderr and not proc.stdout.strip()


# --------------------------------------------------------------------------------------- Slurm scripts

JOB = "31337"
RUN = REPO / "runs" / f"slurm-{JOB}"


def slurm_env(tmp_path: Path, srun: str | None = None, **extra) -> dict:
    """A 2-node, 4-GPU-per-node allocation as Slurm describes it to a batch script; `srun` (when given) is a
    stand-in for Slurm's srun that only answers `srun --mpi=list` with that text."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if srun is not None:
        (bin_dir / "srun").write_text(f"#!/bin/sh\nprintf '%s\\n' '{srun}'\n")
        (bin_dir / "srun").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "SLURM_JOB_ID": JOB,
           "SLURM_NTASKS": "8", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "4", "SLURM_GPUS_PER_NODE": "4",
           "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_SUBMIT_DIR": str(REPO), "MELON_DRY_RUN": "1"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


SRUN = ["srun", "--mpi=pmix", "--nodes=2", "--ntasks=8", "--ntasks-per-node=4", "--kill-on-bad-exit=1"]


def test_dae_sbatch_starts_one_rank_per_gpu_with_srun_pmix_in_the_job_run_directory(tmp_path):
    proc = bash(SLURM / "dae.sbatch", env=slurm_env(tmp_path, MELON_LAUNCHER="srun"))
    assert commands(proc) == [SRUN + ["python", "hvd_train/dae.py", "--work", f"{RUN}/work", "--out", f"{RUN}/dae"]]
    assert f"run directory: {RUN}" in proc.stderr and "8 ranks on 2 node(s) (gpu[01-02]), 4 per node" in proc.stderr
    assert not RUN.exists()  # a dry run creates nothing


@pytest.mark.parametrize("srun_says, launcher", [
    ("MPI plugin types are...\n\tnone\n\tpmi2\n\tpmix\nspecific pmix plugin versions available: pmix_v4", "srun"),
    ("MPI plugin types are...\n\tnone\n\tpmi2", "mpirun"),
    (None, "mpirun"),  # no srun on PATH at all
])
def test_the_launcher_is_srun_where_it_has_pmix_else_mpirun(tmp_path, srun_says, launcher):
    proc = bash(SLURM / "dae.sbatch", env=slurm_env(tmp_path, srun=srun_says, HOROVOD_FUSION_THRESHOLD=67108864))
    (cmd,) = commands(proc)
    assert cmd[0] == launcher and cmd[-5:] == ["hvd_train/dae.py", "--work", f"{RUN}/work", "--out", f"{RUN}/dae"]
    if launcher == "mpirun":
        assert cmd[:7] == ["mpirun", "-np", "8", "--map-by", "ppr:4:node", "--bind-to", "none"]
        exported = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-x"]
        assert {"PATH", "PYTHONPATH", "HOROVOD_FUSION_THRESHOLD"} <= set(exported)
        assert "no srun with PMIx" in proc.stderr
    else:
        assert cmd[:6] == SRUN
    assert "passed to every rank: HOROVOD_FUSION_THRESHOLD=67108864" in proc.stderr


def test_title_sbatch_pretrains_then_finetunes_from_the_pretraining(tmp_path):
    proc = bash(SLURM / "title.sbatch", "--set", "train.epochs=2",
                env=slurm_env(tmp_path, MELON_LAUNCHER="mpirun", MELON_SET="pretrain:train.epochs=9 train.seed=1",
                              MELON_MPIRUN_ARGS="--mca btl ^openib"))
    pre, fine = commands(proc)
    assert pre[0] == fine[0] == "mpirun" and pre[pre.index("python") - 3:pre.index("python")] == ["--mca", "btl", "^openib"]
    # MELON_SET first, then the command line's --set (the later one wins in the trainer)
    assert pre[pre.index("python") + 1:] == ["hvd_train/title.py", "pretrain", "--work", f"{RUN}/work", "--out",
                                             f"{RUN}/title-pretrain", "--set", "train.epochs=9", "--set", "train.seed=1",
                                             "--set", "train.epochs=2"]
    assert fine[fine.index("finetune"):] == ["finetune", "--work", f"{RUN}/work", "--out", f"{RUN}/title-finetune",
                                             "--init", f"{RUN}/title-pretrain", "--set", "train.seed=1",
                                             "--set", "train.epochs=2"]


def test_pipeline_sbatch_splits_preprocesses_and_trains_every_model_in_order(tmp_path):
    env = slurm_env(tmp_path, MELON_LAUNCHER="srun", MELON_DATA="/data/melon", SLURM_GPUS_PER_NODE="a100:4")
    split, pre, dae, title_pre, title_fine = commands(bash(SLURM / "pipeline.sbatch", env=env))
    assert split == ["srun", "--nodes=1", "--ntasks=1", "python", "-m", "data.split", "/data/melon/train.json",
                     "--out", f"{RUN}/split", "--seed", "777", "--force"]
    assert pre == SRUN + ["python", "-m", "data.preprocess", "--split", f"{RUN}/split", "--meta", "/data/melon",
                          "--out", f"{RUN}/work"]
    assert dae[-4:] == ["--work", f"{RUN}/work", "--out", f"{RUN}/dae"]
    assert title_pre[-6:-4] == ["hvd_train/title.py", "pretrain"] and title_fine[-8:-6] == ["hvd_train/title.py", "finetune"]


def test_a_resubmitted_pipeline_reuses_the_run_directory_and_skips_finished_preprocessing(tmp_path):
    run = tmp_path / "runs" / "slurm-100"
    (run / "work").mkdir(parents=True)
    (run / "work" / "manifest.json").write_text("{}")
    env = slurm_env(tmp_path, MELON_LAUNCHER="srun", MELON_RUN_DIR="runs/slurm-100", SLURM_RESTART_COUNT=1)
    proc = bash(SLURM / "pipeline.sbatch", env=env, cwd=tmp_path)  # MELON_RUN_DIR relative to where sbatch ran
    cmds = commands(proc)
    assert [c[c.index("python") + 1:c.index("python") + 3] for c in cmds] == [
        ["hvd_train/dae.py", "--work"], ["hvd_train/title.py", "pretrain"], ["hvd_train/title.py", "finetune"]]
    assert all(f"{run}/" in " ".join(c) and JOB not in " ".join(c) for c in cmds)
    assert f"reusing {run}/work" in proc.stderr and "requeued 1 time(s)" in proc.stderr


def test_preprocess_sbatch_with_a_given_split_runs_mpi_ranks_only(tmp_path):
    env = slurm_env(tmp_path, MELON_LAUNCHER="mpirun", MELON_DATA="/d", MELON_SPLIT="/s", MELON_WORK="/scratch/work")
    (cmd,) = commands(bash(SLURM / "preprocess.sbatch", env=env))
    assert cmd[0] == "mpirun" and cmd[-9:] == ["python", "-m", "data.preprocess", "--split", "/s", "--meta", "/d",
                                               "--out", "/scratch/work"]
    missing = bash(SLURM / "preprocess.sbatch", env=slurm_env(tmp_path), check=False)
    assert missing.returncode == 2 and "preprocess needs MELON_DATA" in missing.stderr


def test_a_container_image_runs_every_step_through_pyxis_with_the_folders_mounted(tmp_path):
    env = slurm_env(tmp_path, MELON_LAUNCHER="srun", MELON_IMAGE="/images/melon-hvd.sqsh", MELON_DATA="/data/melon",
                    MELON_WORK="/scratch/melon/work", MELON_CONTAINER_MOUNTS="/cache:/cache")
    cmds = commands(bash(SLURM / "pipeline.sbatch", env=env))
    container = ["--container-image=/images/melon-hvd.sqsh",
                 f"--container-mounts={REPO}:{REPO},/scratch/melon:/scratch/melon,/data/melon:/data/melon,/cache:/cache",
                 f"--container-workdir={REPO}"]
    assert len(cmds) == 5 and all(c[0] == "srun" and c[c.index("python") - 3:c.index("python")] == container for c in cmds)
    refused = bash(SLURM / "dae.sbatch", env=slurm_env(tmp_path, MELON_LAUNCHER="mpirun", MELON_IMAGE="x.sqsh"), check=False)
    assert refused.returncode == 2 and "MELON_IMAGE needs srun" in refused.stderr


@pytest.mark.parametrize("change, words", [
    ({"SLURM_JOB_ID": None}, "not inside a Slurm job"),
    ({"MELON_LAUNCHER": "ssh"}, "MELON_LAUNCHER must be auto, srun or mpirun"),
    ({"MELON_SET": "nokey"}, "expected [STAGE:]KEY=VALUE"),
])
def test_sbatch_refuses_what_it_cannot_run(tmp_path, change, words):
    env = slurm_env(tmp_path)
    for key, value in change.items():
        env.pop(key) if value is None else env.__setitem__(key, value)
    proc = bash(SLURM / "dae.sbatch", env=env, check=False)
    assert proc.returncode == 2 and words in proc.stderr and not proc.stdout.strip()


def test_one_rank_per_gpu_is_checked(tmp_path):
    proc = bash(SLURM / "dae.sbatch", env=slurm_env(tmp_path, MELON_LAUNCHER="srun", SLURM_GPUS_PER_NODE="2"))
    assert "4 ranks per node on 2 GPUs per node" in proc.stderr


# ---------------------------------------------------------------------------------------- real runs

def checksums(output: str) -> list[str]:
    return re.search(r"weight checksums by rank: \[([^\]]+)\]", output).group(1).split(", ")


@pytest.mark.slow
def test_train_sh_trains_the_dae_on_two_ranks_and_a_resubmitted_sbatch_job_resumes_it(workdirs, tmp_path):
    run = tmp_path / "run"
    sets = [a for s in FAST for a in ("--set", s)]
    proc = bash(LAUNCH / "train.sh", "--np", 2, "--stages", "dae", "--work", workdirs[0], "--out", run, *sets,
                env={**os.environ, "MELON_PYTHON": sys.executable}, timeout=600)
    out = proc.stdout + proc.stderr
    assert "running: horovodrun -np 2" in out and re.findall(r"\[dae\] epoch (\d+): loss", out) == ["1"]
    assert len(checksums(out)) == 2 and len(set(checksums(out))) == 1
    assert (run / "dae/export/weights.npz").is_file() and not (run / "title-pretrain").exists()

    # The same run directory from a (simulated) Slurm job with mpirun: the DAE resumes after epoch 1.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.update({"SLURM_JOB_ID": "777", "SLURM_NTASKS": "2", "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "2",
                "MELON_LAUNCHER": "mpirun", "MELON_RUN_DIR": str(run), "MELON_WORK": str(workdirs[0]),
                "MELON_SET": " ".join(FAST + ["train.epochs=2"]), "MELON_PYTHON": sys.executable})
    bash(SLURM / "dae.sbatch", env=env, timeout=600)
    log = (run / "logs/dae-777.log").read_text(encoding="utf-8")
    assert "running: mpirun -np 2 --map-by ppr:2:node --bind-to none" in log
    assert re.search(r"resumed from \S+ckpt-1: epoch 1", log) and re.findall(r"\[dae\] epoch (\d+): loss", log) == ["2"]
    assert len(set(checksums(log))) == 1


TCMALLOC = Path(f"/usr/lib/{os.uname().machine}-linux-gnu/libtcmalloc_minimal.so.4")


@pytest.mark.skipif(not TCMALLOC.exists(), reason="launch/setup.sh installs libtcmalloc-minimal4")
def test_env_preloads_tcmalloc_once_and_leaves_glibc_malloc_when_asked():
    """launch/env.sh puts tcmalloc in front of glibc's malloc (docs/cpu.md) for what the shell starts: a Python
    process started from it has tcmalloc mapped; sourcing twice preloads it once; MELON_ALLOCATOR=glibc
    leaves LD_PRELOAD alone."""
    check = (f"source {LAUNCH / 'env.sh'} && source {LAUNCH / 'env.sh'} && echo \"preload=$LD_PRELOAD\" && "
             "python -c \"print('mapped=' + str('libtcmalloc' in open('/proc/self/maps').read()))\"")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MELON_ALLOCATOR")}
    out = subprocess.run(["bash", "-c", check], cwd=REPO, capture_output=True, text=True, env=env).stdout
    assert f"preload={TCMALLOC}\n" in out and "mapped=True" in out
    out = subprocess.run(["bash", "-c", check], cwd=REPO, capture_output=True, text=True,
                         env={**env, "MELON_ALLOCATOR": "glibc"}).stdout
    assert "preload=\n" in out and "mapped=False" in out
