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


def load(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
