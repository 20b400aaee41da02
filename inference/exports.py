"""Model exports for inference: one loader and one error for every member's export (the trained models'
and the neighbour members'), each checked against the work directory it is used with.

An export is a folder (RUNDIR/export, or the folder itself) of ``weights.npz`` + ``config.json`` (no
pickle, models/export.py); its config names the kind of model and the sha256 of the vocabulary and the
title tokenizer it was made with, which must be this work directory's.
"""

from __future__ import annotations

from pathlib import Path

from data.workdir import identity_mismatch
from models.config import ConfigError, parse_section
from models.export import read_export


class ExportError(ValueError):
    """A model export that cannot be used with this work directory."""


def load_export(rundir: Path, expected: tuple, manifest: dict, workdir: Path, made_by: str | None = None):
    """(weights {name: array}, config.json) of RUNDIR's export (or an export folder): an ``expected`` kind of
    model made on this work directory's vocabulary and tokenizer; ExportError otherwise. ``made_by``: the
    command that makes such an export, named when there is none."""
    rundir = Path(rundir)
    export = rundir / "export" if (rundir / "export").is_dir() else rundir
    if not (export / "weights.npz").is_file() or not (export / "config.json").is_file():
        how = f"make it with {made_by}" if made_by else "is it a finished training run directory?"
        raise ExportError(f"{rundir}: no export (weights.npz + config.json); {how}")
    weights, config = read_export(export)
    if config.get("model") not in expected:
        raise ExportError(f"{rundir}: its export is a {config.get('model')!r} model, expected {' or '.join(expected)}")
    wrong = identity_mismatch(config, manifest, by_key=True)
    if wrong:
        raise ExportError(f"{rundir}: trained with another {' and '.join(wrong)} than {workdir} has (sha256 "
                          f"differs); use the work directory the model was trained on")
    return weights, config


# model keys added after exports of the model existed, with the value that reproduces those older models
ADDED_KEYS = {"DAEConfig": {"artist_prior": 0.0}}


def model_config(cls, rundir: Path, config: dict):
    """The export's ``model_config`` as the model's typed section (an older export's missing
    :data:`ADDED_KEYS` read as what its model was); ExportError when it does not fit."""
    raw = config.get("model_config")
    if isinstance(raw, dict):
        raw = {**ADDED_KEYS.get(cls.__name__, {}), **raw}
    try:
        return parse_section(cls, raw, "model_config")
    except ConfigError as e:
        raise ExportError(f"{rundir}: the export's {e}; retrain with this version") from None


def load_model(rundir: Path, expected: tuple, manifest: dict, workdir: Path, build) -> tuple[object, dict]:
    """(model, config.json): RUNDIR's export checked by :func:`load_export`, ``build(config)``'s model with
    the export's weights assigned; ExportError when they do not fit it."""
    from models.weights import assign_weights

    weights, config = load_export(rundir, expected, manifest, workdir)
    model = build(config)
    problem = assign_weights(model, weights)
    if problem:
        raise ExportError(f"{rundir}: {problem}")
    return model, config


def load_dae(rundir: Path, manifest: dict, workdir: Path):
    from models.dae import DAE, DAEConfig

    return load_model(rundir, ("dae",), manifest, workdir,
                      lambda config: DAE.from_config(model_config(DAEConfig, rundir, config), config["sizes"]))


def load_title(rundir: Path, manifest: dict, workdir: Path, tokenizer):
    from models.title import TitleBERT, TitleConfig

    return load_model(rundir, ("title_finetune",), manifest, workdir, lambda config: TitleBERT.from_config(
        model_config(TitleConfig, rundir, config), config["sizes"], tokenizer))


def load_word2vec(rundir: Path, manifest: dict, workdir: Path):
    from models.word2vec import Word2Vec, Word2VecConfig

    return load_model(rundir, ("word2vec",), manifest, workdir, lambda config: Word2Vec.from_config(
        model_config(Word2VecConfig, rundir, config), config["sizes"]))


def load_cnn(rundir: Path, manifest: dict, workdir: Path):
    """(MelCNN with the export's weights, its config.json); ExportError when it is not a CNN of WORKDIR's
    mel shards (their genre codes)."""
    from models.cnn import CNNConfig, MelCNN

    def build(config):
        if config.get("genres") != manifest.get("mel", {}).get("genres"):
            raise ExportError(f"{rundir}: trained with other genre codes than {workdir}'s mel shards")
        return MelCNN.from_config(model_config(CNNConfig, rundir, config), config["sizes"]["tags"],
                                  len(config["genres"]))

    return load_model(rundir, ("cnn",), manifest, workdir, build)
