"""The title trainer under real Horovod ranks: MLM pretraining, weight transfer into fine-tuning, resume,
identical weights across ranks, and refusal of a pretrained model that does not fit; and fine-tuning from
scratch as one plain process (no horovodrun)."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from models.export import read_export

FAST = ["--set", "train.batch_size=64", "--set", "train.warmup_steps=20", "--set", "validation.every_epochs=1",
        "--set", "model.hidden=32", "--set", "model.ffn=64", "--set", "validation.batch_size=128"]


def title(np_: int | None, stage: str, work, out, *extra, check=True) -> subprocess.CompletedProcess:
    """horovodrun -np N python hvd_train/title.py STAGE ...; with ``np_=None`` one plain process, no horovodrun."""
    launcher = [] if np_ is None else ["horovodrun", "-np", str(np_)]
    cmd = [*launcher, sys.executable, str(REPO / "hvd_train/title.py"), stage, "--work", str(work),
           "--out", str(out), *FAST, *map(str, extra)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def checksums(output: str) -> list[str]:
    return re.search(r"weight checksums by rank: \[([^\]]+)\]", output).group(1).split(", ")


@pytest.fixture(scope="module")
def pretrained(workdirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("title") / "pretrain"
    proc = title(2, "pretrain", workdirs[0], out, "--set", "train.epochs=2")
    return out, proc.stdout


@pytest.mark.slow
def test_pretraining_learns_masked_pieces_on_two_synced_ranks(pretrained):
    out, log = pretrained
    accuracy = [float(a) for a in re.findall(r"masked-piece loss [0-9.]+ accuracy ([0-9.]+)", log)]
    losses = [float(x) for x in re.findall(r"\[title_pretrain\] epoch \d+: loss ([0-9.]+)", log)]
    assert len(accuracy) == 2 and accuracy[-1] > 0.02 and losses[-1] < losses[0]
    assert len(set(checksums(log))) == 1
    weights, config = read_export(out / "export")
    assert config["model"] == "title_pretrain" and "encoder/blocks/0/query/w" in weights


@pytest.mark.slow
def test_finetuning_starts_from_the_pretrained_encoder(workdirs, pretrained, tmp_path):
    pre_out, _ = pretrained
    # a learning rate ~1e-9: after one epoch the fine-tuned encoder is still the pretrained one
    log = title(2, "finetune", workdirs[0], tmp_path / "ft", "--init", pre_out, "--set", "train.epochs=1",
                "--set", "train.warmup_steps=100000000").stdout
    assert len(set(checksums(log))) == 1
    assert re.search(r"title-only questions: music [0-9.]+ tag [0-9.]+ score [0-9.]+ \(n=\d+\)", log)
    pre, _ = read_export(pre_out / "export")
    fine, config = read_export(tmp_path / "ft/export")
    assert config["model"] == "title_finetune" and config["initialised_from"] == str(pre_out)
    for name in [n for n in pre if n.startswith(("pieces", "positions", "encoder/"))]:
        np.testing.assert_allclose(fine[name], pre[name], atol=1e-4, err_msg=name)
    resumed = title(2, "finetune", workdirs[0], tmp_path / "ft", "--init", pre_out, "--set", "train.epochs=2").stdout
    assert "resumed from" in resumed and "epoch 1, step" in resumed
    assert [e for e in re.findall(r"\[title_finetune\] epoch (\d+):", resumed)] == ["2"]


@pytest.mark.slow
def test_finetuning_from_scratch_as_one_plain_process(workdirs, tmp_path):
    """No --init (a fresh encoder) and no horovodrun (python hvd_train/title.py finetune, as a user may start
    it): one process trains, validates on the title-only questions and exports."""
    log = title(None, "finetune", workdirs[0], tmp_path / "ft", "--set", "train.epochs=1",
                "--set", "train.steps_per_epoch=3").stdout
    assert "global batch 64 (64 x 1 ranks), 3 steps per epoch" in log and len(checksums(log)) == 1
    assert re.search(r"title-only questions: music [0-9.]+ tag [0-9.]+ score [0-9.]+ \(n=\d+\)", log)
    weights, config = read_export(tmp_path / "ft/export")
    assert config["model"] == "title_finetune" and config["initialised_from"] is None and weights


@pytest.mark.slow
def test_a_pretrained_model_that_does_not_fit_is_refused(workdirs, pretrained, tmp_path):
    """One real two-rank refusal: rank 0 checks the pretraining, every rank stops, nothing is exported."""
    pre_out, _ = pretrained
    wrong = title(2, "finetune", workdirs[0], tmp_path / "ft", "--init", pre_out, "--set", "model.hidden=48",
                  "--set", "train.epochs=1", check=False)
    assert wrong.returncode == 2 and "has shape" in wrong.stdout + wrong.stderr  # hvd_train/common.py fail()
    assert not (tmp_path / "ft/export").exists()


def refusal(work, init) -> str | None:
    """hvd_train.title.load_pretrained in process, on a fine-tuning model of configs/title.yaml (+ FAST)."""
    import json

    from data.title import TitleTokenizer
    from hvd_train import title as trainer
    from hvd_train.config import load_config
    from models.title import TitleBERT

    config = trainer.check_config(load_config(trainer.DEFAULT_CONFIG, FAST[1::2]))
    manifest = json.loads((work / "manifest.json").read_text())
    model = TitleBERT.from_config(config.model, manifest["sizes"], TitleTokenizer(work / "title.model"))
    return trainer.load_pretrained(model, init, manifest)


@pytest.mark.slow
def test_a_missing_or_foreign_pretraining_is_refused_naming_why(workdirs, pretrained, tmp_path):
    """Another work directory's tokenizer of the same size has the same shapes: only the hash tells."""
    import json
    import shutil

    pre_out, _ = pretrained
    assert refusal(workdirs[0], pre_out) is None  # the real one fits
    assert "no export/weights.npz" in refusal(workdirs[0], tmp_path)
    other = tmp_path / "other-pretrain"
    shutil.copytree(pre_out / "export", other / "export")
    config = json.loads((other / "export/config.json").read_text())
    ours, config["tokenizer_sha256"] = config["tokenizer_sha256"], "0" * 64
    (other / "export/config.json").write_text(json.dumps(config))
    text = refusal(workdirs[0], other)
    assert "another tokenizer" in text and "0" * 64 in text and ours in text
    config.update(tokenizer_sha256=ours, model="dae")
    (other / "export/config.json").write_text(json.dumps(config))
    assert "is a 'dae' model, not a title pretraining run" in refusal(workdirs[0], other)
