"""The inference export of a trained model: ``weights.npz`` (its variables by path, models/weights.py; no
pickle) and ``config.json`` (the model section, the vocabulary sizes and the work directory's hashes the
trainer recorded), written atomically by rank 0 and read by the ensemble."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from data.melon import write_json


def write_export(directory: Path, variables: dict, config: dict) -> None:
    """Weights (npz, no pickle) and config (JSON), written to a temporary folder and renamed into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    with open(tmp / "weights.npz", "wb") as f:
        np.savez(f, **variables)
    write_json(config, tmp / "config.json")
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old)
    else:
        tmp.rename(directory)


def read_export(directory: Path) -> tuple[dict, dict]:
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    with np.load(directory / "weights.npz", allow_pickle=False) as weights:
        return {k: weights[k] for k in weights.files}, config


def read_export_config(directory: Path) -> dict:
    """An export's config.json; {} when the folder holds no export (yet)."""
    path = Path(directory) / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def below_popularity(config: dict) -> str | None:
    """Why a trained model's export should not answer on its own, or None: its best validation score fell
    below popularity's on the same tuning questions (hvd_train/common.py's Validator reports both), i.e. its
    data were too thin or its training too short to learn from. Inference then answers with popularity in
    its place, so that no trained member ranks below popularity."""
    validation = config.get("validation") or {}
    score, popular = validation.get("score"), validation.get("popularity_score")
    if score is None or popular is None or score >= popular:
        return None
    return (f"its best validation score {score:.4f} is below popularity's {popular:.4f} on the same tuning "
            f"questions (too little data or too short a training to learn from)")
