"""A trainer's config: the YAML with ``--set`` overrides, read once into frozen dataclasses per section.

``load_config`` reads configs/X.yaml and applies ``section.key=value`` overrides (an unknown key or a
value of another kind than the YAML's is a :class:`ConfigError`); a trainer's ``TrainerConfig`` subclass
then types it (``TrainerConfig.parse``), before ``hvd.init()``, so a bad config stops every rank at once
with one line. The sections below are what every trainer shares; a trainer adds its model's section
(models/dae.py ``DAEConfig``, models/title.py ``TitleConfig``) and its own keys by subclassing. No field
has a default: the YAML is the one place defaults live.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from models.config import ConfigError, as_dict, parse_section
from models.losses import ITEM_LOSSES

def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> dict:
    """The YAML config with ``section.key=value`` overrides; unknown keys and wrong types are ConfigError."""
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    defaults = copy.deepcopy(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        *sections, leaf = key.split(".")
        node, default = config, defaults
        for section in sections:
            if not isinstance(node.get(section), dict):
                raise ConfigError(f"override {item!r}: no section {section!r} in {path}")
            node, default = node[section], default[section]
        if leaf not in node:
            raise ConfigError(f"override {item!r}: no key {leaf!r} in section {'.'.join(sections) or '(top)'} of {path}; "
                              f"known keys: {', '.join(sorted(node))}")
        value = yaml.safe_load(raw)
        if default[leaf] is not None and value is not None and not _same_kind(default[leaf], value):
            raise ConfigError(f"override {item!r}: expected {type(default[leaf]).__name__} like {default[leaf]!r}")
        node[leaf] = value
    return config


def _same_kind(default, value) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def positive(section, *keys: str, name: str) -> None:
    """ConfigError unless each of ``keys`` of ``section`` (the config section ``name``) is positive (or null
    where its type allows null)."""
    nullable = {f.name for f in dataclasses.fields(section) if "None" in str(f.type)}
    for key in keys:
        value = getattr(section, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{name}.{key} must be positive" + (" or null" if key in nullable else ""))


def probability(section, *keys: str, name: str) -> None:
    for key in keys:
        if not 0.0 <= getattr(section, key) <= 1.0:
            raise ConfigError(f"{name}.{key} must be a probability in [0, 1]")


LR_SCALING = {"linear": lambda size: float(size), "sqrt": math.sqrt, "none": lambda size: 1.0}


@dataclass(frozen=True)
class TrainConfig:
    """``train``: batches, schedule, optimizer, seed and input pipeline (configs/*.yaml explain each key)."""
    batch_size: int  # per rank
    global_batch_size: int | None  # or a global batch split evenly over the ranks
    epochs: int
    steps_per_epoch: int | None  # at most this many steps per epoch (time-budget runs)
    warmup_steps: int
    lr_scaling: str  # linear | sqrt | none in the ranks
    lr_multiplier: float
    beta1: float
    beta2: float
    epsilon: float
    weight_decay: float  # decoupled (AdamW) on the model's decayed tables
    seed: int
    shuffle_buffer: int
    interleave_cycle: int
    interleave_block: int
    max_bad_steps: int  # non-finite steps in a row before training stops
    accumulation_steps: int  # k: one allreduce and one update per k batches of each rank (gradients averaged)
    max_minutes: float | None  # stop after the first epoch that ends past this many minutes of training

    def __post_init__(self):
        positive(self, "batch_size", "global_batch_size", "epochs", "steps_per_epoch", "warmup_steps", "lr_multiplier",
                  "shuffle_buffer", "interleave_cycle", "interleave_block", "max_bad_steps", "accumulation_steps",
                  "max_minutes", name="train")
        if self.lr_scaling not in LR_SCALING:
            raise ConfigError(f"train.lr_scaling must be linear, sqrt or none, got {self.lr_scaling!r}")
        if self.weight_decay < 0:
            raise ConfigError("train.weight_decay must be >= 0")


@dataclass(frozen=True)
class LossConfig:
    """``loss``: the recommendation loss of the DAE and of title fine-tuning (models/losses.py)."""
    item_loss: str  # softmax | bce
    tag_weight: float
    rank_weight: float  # + rank_weight x BCE over the model's current top-k songs ...
    rank_from_epoch: int  # ... from this epoch on (1-based)
    rank_k: int

    def __post_init__(self):
        if self.item_loss not in ITEM_LOSSES:
            raise ConfigError(f"loss.item_loss must be one of {sorted(ITEM_LOSSES)}")
        positive(self, "rank_k", "rank_from_epoch", name="loss")

    def rank_weight_at(self, epoch: int) -> float:
        """The ranking term's weight in ``epoch``: rank_weight from rank_from_epoch on, else 0."""
        return self.rank_weight if self.rank_weight and epoch >= self.rank_from_epoch else 0.0


@dataclass(frozen=True)
class ValidationConfig:
    every_epochs: int
    patience_epochs: int
    batch_size: int

    def __post_init__(self):
        positive(self, "every_epochs", "patience_epochs", "batch_size", name="validation")


@dataclass(frozen=True)
class CheckpointConfig:
    keep_last: int

    def __post_init__(self):
        positive(self, "keep_last", name="checkpoint")


@dataclass(frozen=True)
class HardwareConfig:
    """``hardware``: how each rank computes and how gradients travel (hvd_train/loop.py ``trace_step``)."""
    mixed_precision: bool
    xla: bool
    gradient_compression: str  # none | fp16
    sparse_as_dense: bool
    loss_scale_initial: float
    loss_scale_growth_steps: int

    def __post_init__(self):
        if self.gradient_compression not in ("none", "fp16"):
            raise ConfigError("hardware.gradient_compression must be none or fp16")
        if self.loss_scale_initial < 1 or self.loss_scale_growth_steps <= 0:
            raise ConfigError("hardware.loss_scale_initial must be >= 1 and hardware.loss_scale_growth_steps positive")


@dataclass(frozen=True)
class ElasticConfig:
    commit_every_steps: int

    def __post_init__(self):
        positive(self, "commit_every_steps", name="elastic")


@dataclass(frozen=True)
class FaultsConfig:
    """``faults``: fault injection for drills and tests (bench/faults.py); null in real runs."""
    nan_loss_from_step: int | None
    nan_loss_rank: int
    nan_loss_steps: int | None  # batches with a NaN loss (skipped steps included); None: all from then on

    def __post_init__(self):
        positive(self, "nan_loss_steps", name="faults")


@dataclass(frozen=True)
class TrainerConfig:
    """A trainer's whole config, one typed section each. Subclasses name their model section's class and may
    widen ``train`` or add sections, such as ``loss`` (hvd_train/dae.py, hvd_train/title.py)."""
    model: object
    train: TrainConfig
    validation: ValidationConfig
    checkpoint: CheckpointConfig
    hardware: HardwareConfig
    elastic: ElasticConfig
    faults: FaultsConfig

    @classmethod
    def parse(cls, raw: dict):
        """``raw`` (``load_config``'s mapping) typed section by section; ConfigError on anything missing,
        unknown or malformed."""
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if not isinstance(raw.get(n), dict)]
        if missing:
            raise ConfigError(f"the config has no section {', '.join(map(repr, missing))} (every {cls.__name__} needs "
                              f"{', '.join(names)}; see configs/)")
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ConfigError(f"the config has unknown section(s) {', '.join(map(repr, unknown))}")
        return cls(**{n: parse_section(hints[n], raw[n], n) for n in names})

    def per_rank_batch(self, size: int) -> int:
        """The per-rank batch: ``train.batch_size``, or ``train.global_batch_size`` split evenly over the ranks."""
        total = self.train.global_batch_size
        if total:
            if total % size:
                raise ConfigError(f"train.global_batch_size={total} does not divide over {size} ranks")
            return total // size
        return self.train.batch_size

    def lr_scale(self, size: int) -> float:
        """The schedule's factor for ``size`` ranks: ``train.lr_scaling`` times ``train.lr_multiplier``."""
        return LR_SCALING[self.train.lr_scaling](size) * self.train.lr_multiplier

    def as_dict(self) -> dict:
        return as_dict(self)
