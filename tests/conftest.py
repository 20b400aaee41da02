"""Shared fixtures: one tiny synthetic data set and its official split, written to real files once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_module(module: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` from the repository root, as a user would."""
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m {module} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    run_module("data.synth", "--scale", "tiny", "--seed", "3", "--out", out, "--force")
    return out


@pytest.fixture(scope="session")
def tiny_split(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_split")
    run_module("data.split", tiny_data / "train.json", "--out", out, "--seed", "777", "--force")
    return out


def mpirun(n: int, *args, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["mpirun", "-np", str(n), "--oversubscribe", sys.executable, "-m", "data.preprocess", *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def workdirs(tiny_data, tiny_split, tmp_path_factory):
    root = tmp_path_factory.mktemp("work")
    mpirun(1, "--split", tiny_split, "--meta", tiny_data, "--out", root / "np1")
    mpirun(2, "--split", tiny_split, "--meta", tiny_data, "--out", root / "np2")
    return root / "np1", root / "np2"


def load(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
