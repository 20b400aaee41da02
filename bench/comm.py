"""What each rank sends per training step, by trainer, tensor and switch; FLOPs per step; checked against Horovod.

    python -m bench.comm [--work runs/quickstart-small/work] [--melon-sizes bench/results/inference_melon.json]
                         [--no-timeline]

For each trainer of :data:`TRAINERS`, with its configs/*.yaml as they are:

1. **One real step, in this process**: the trainer's own task builder (its model, loss and the first batch of
   rank 0 of 2, ``hvd_train/one_rank.py`` standing in for Horovod), traced as a tf.function that returns the
   gradients of the trained variables, then run. A gradient is dense (``tf.Tensor``) or rows
   (``tf.IndexedSlices``: values [lookups, d] and indices [lookups], one row per lookup, duplicates included:
   Horovod does not merge them).
2. **Bytes by switch.** Each switch splits a step's gradients into ``allreduce_bytes`` A (a ring allreduce
   sends 2(N-1)/N x A per rank) and ``allgather_bytes`` G (a ring allgather sends (N-1) x G per rank):
   ``dense`` (every gradient densified, float32: ``hardware.sparse_as_dense: true``), ``dense_fp16`` (the
   same as float16: ``gradient_compression: fp16``) and ``rows`` (IndexedSlices allgathered, values float32
   and int32/int64 indices; the rest allreduced in float32: ``sparse_as_dense: false``). Per playlist: divided
   by the per-rank batch.
3. **Melon scale**: the same step with the models built at the real data's vocabulary sizes (MELON_SIZES:
   songs, tags and artists of ``bench/results/inference_melon.json``; the 6,000 title pieces are the same):
   the tables and the tied output heads grow, a batch's lookups do not.
4. **FLOPs per step** of the traced forward and backward pass: 2 x output elements x contracted size of every
   MatMul and BatchMatMul, 2 x the product of every index size of every Einsum, and 2 x output positions x
   the filter's size of every convolution and of its two gradients (gathers, pooling, element-wise ops and
   the optimizer are not counted: the matmuls and convolutions are nearly all of the arithmetic).
5. **Horovod's timeline** (``HOROVOD_TIMELINE``): one step of each trainer under ``horovodrun -np 2`` on
   WORK; the dtype and shape of every gradient collective's result, summed, against step 1's figures for
   the trainer's configured switch (``--no-timeline`` skips this).

Writes bench/results/comm.json (``$MELON_BENCH_RESULTS`` elsewhere); ``bench/scaling.py`` reads it. With
``--trainers`` naming some of them, their entries replace those of the same name in an existing comm.json
(each entry records the work directory it was measured on).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from bench.common import REPO, results_dir, save_result
from hvd_train.loop import GRADIENT_SCOPE
from hvd_train.one_rank import OneRank

TRAINERS = {  # name -> (config file, trainer command after the python executable)
    "dae": ("configs/dae.yaml", ["hvd_train/dae.py"]),
    "title_pretrain": ("configs/title.yaml", ["hvd_train/title.py", "pretrain"]),
    "title_finetune": ("configs/title.yaml", ["hvd_train/title.py", "finetune"]),
    "word2vec": ("configs/word2vec.yaml", ["hvd_train/word2vec.py"]),
    "cnn": ("configs/cnn.yaml", ["hvd_train/cnn.py"]),  # needs WORK's mel shards (data.preprocess --mel)
}
MATMULS = ("MatMul", "BatchMatMulV2", "BatchMatMulV3")
CONVOLUTIONS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")


# ------------------------------------------------------------------------------------ one step in process

def build_task(trainer: str, work: Path, manifest: dict, overrides: list[str] = ()):
    """(the trainer's Task at one rank, its typed config), built by the trainer's own code; ``overrides``:
    ``section.key=value`` for the DAE's config."""
    import tensorflow as tf

    from hvd_train.config import load_config

    hvd, config_file = OneRank(), REPO / TRAINERS[trainer][0]
    if trainer == "dae":
        from hvd_train import dae

        config = dae.check_config(load_config(config_file, overrides))
        return dae.dae_task(hvd, config, manifest, work), config
    if trainer == "word2vec":
        from hvd_train import word2vec

        config = word2vec.check_config(load_config(config_file))
        return word2vec.word2vec_task(hvd, config, manifest, work), config
    if trainer == "cnn":
        from hvd_train import cnn

        config = cnn.check_config(load_config(config_file))
        return cnn.cnn_task(hvd, config, manifest, work), config
    from data.title import TitleTokenizer
    from hvd_train import title
    from models.title import TitleBERT

    config = title.check_config(load_config(config_file))
    tokenizer = TitleTokenizer(work / "title.model")
    tf.random.set_seed(config.train.seed)
    model = TitleBERT.from_config(config.model, manifest["sizes"], tokenizer)
    stage = title.pretrain_task if trainer == "title_pretrain" else title.finetune_task
    return stage(hvd, model, tokenizer, config, manifest, SimpleNamespace(work=work, init=None)), config


def einsum_flops(op) -> int:
    """2 x the product of the sizes of every index letter of an Einsum op's equation."""
    inputs = op.get_attr("equation").decode().split("->")[0].split(",")
    sizes = {}
    for letters, tensor in zip(inputs, op.inputs):
        sizes.update(zip(letters, tensor.shape.as_list()))
    return 2 * math.prod(sizes.values())


def conv_flops(op) -> int:
    """2 x output positions x c_out x kh x kw x c_in of a Conv2D op or of either of its gradients (which do
    the same multiplications): counted on the [batch, H, W, c_out] tensor each holds (the forward's output,
    the gradients' incoming ``out_backprop``) and the [kh, kw, c_in, c_out] filter shape."""
    if op.type == "Conv2D":
        positions, kernel = op.outputs[0].shape.as_list(), op.inputs[1].shape.as_list()
    elif op.type == "Conv2DBackpropInput":
        positions, kernel = op.inputs[2].shape.as_list(), op.inputs[1].shape.as_list()
    else:  # Conv2DBackpropFilter: its output is the filter's gradient
        positions, kernel = op.inputs[2].shape.as_list(), op.outputs[0].shape.as_list()
    return 2 * math.prod(positions) * kernel[0] * kernel[1] * kernel[2]


def matmul_flops(graph) -> int:
    """FLOPs of the matmul-like ops and convolutions of a traced graph (see the module docstring, step 4); None
    when a matmul's shape is dynamic."""
    total = 0
    for op in graph.get_operations():
        if op.type in CONVOLUTIONS:
            total += conv_flops(op)
            continue
        if op.type in MATMULS:
            a = op.inputs[0].shape.as_list()
            transposed = op.get_attr("transpose_a") if op.type == "MatMul" else op.get_attr("adj_x")
            elements, inner = op.outputs[0].shape.num_elements(), a[-2] if transposed else a[-1]
            if elements is None or inner is None:  # a shape known only when it runs (the sampled output's
                return None                        # candidates): the step's FLOPs are not known statically
            total += 2 * elements * inner
        elif op.type == "Einsum":
            total += einsum_flops(op)
    return total


def tensor_bytes(variable, gradient) -> dict:
    """One trained variable's gradient: its dense size and, for rows, the allgathered values and indices."""
    import tensorflow as tf

    row = {"name": variable.name.split(":")[0], "shape": variable.shape.as_list(),
           "dense_bytes": variable.shape.num_elements() * 4, "sparse": isinstance(gradient, tf.IndexedSlices)}
    if row["sparse"]:
        lookups = int(gradient.indices.shape[0])
        row.update(lookups=lookups, unique_rows=int(tf.size(tf.unique(gradient.indices)[0])),
                   rows_bytes=int(gradient.values.shape.num_elements()) * 4 + lookups * gradient.indices.dtype.size)
    return row


def switches(tensors: list[dict]) -> dict:
    """allreduce_bytes A and allgather_bytes G of a step under each switch (see the module docstring)."""
    dense = sum(t["dense_bytes"] for t in tensors)
    return {"dense": {"allreduce_bytes": dense, "allgather_bytes": 0},
            "dense_fp16": {"allreduce_bytes": dense // 2, "allgather_bytes": 0},
            "rows": {"allreduce_bytes": sum(t["dense_bytes"] for t in tensors if not t["sparse"]),
                     "allgather_bytes": sum(t["rows_bytes"] for t in tensors if t["sparse"])}}


def sent_per_rank(switch: dict, n: int) -> float:
    """Bytes one rank sends per step at ``n`` ranks: ring allreduce 2(n-1)/n x A plus ring allgather (n-1) x G."""
    return 2 * (n - 1) / n * switch["allreduce_bytes"] + (n - 1) * switch["allgather_bytes"]


def one_step(trainer: str, work: Path, sizes: dict | None = None, overrides: list[str] = ()) -> dict:
    """Step 1-4 of the module docstring for one trainer, at the work directory's sizes or at ``sizes``
    (``overrides``: see :func:`build_task`)."""
    import tensorflow as tf

    manifest = json.loads((work / "manifest.json").read_text(encoding="utf-8"))
    if sizes:
        manifest = {**manifest, "sizes": {**manifest["sizes"], **sizes}}
    task, config = build_task(trainer, work, manifest, overrides)
    batch = next(iter(task.reshard(0, 2)["batches"](1)))

    def gradients(batch):
        with tf.GradientTape() as tape:
            loss, _ = task.loss(batch, 1)
        return tape.gradient(loss, task.variables)

    traced = tf.function(gradients).get_concrete_function(batch)
    tensors = [tensor_bytes(v, g) for v, g in zip(task.variables, traced(batch)) if g is not None]
    by_switch = switches(tensors)
    hardware = config.hardware
    configured = ("rows" if not hardware.sparse_as_dense
                  else "dense_fp16" if hardware.gradient_compression == "fp16" else "dense")
    for switch in by_switch.values():
        switch["sent_per_rank_at_2"] = sent_per_rank(switch, 2)
        switch["sent_per_playlist_at_2"] = round(switch["sent_per_rank_at_2"] / task.batch_size)
    return {"sizes": manifest["sizes"], "batch_size": task.batch_size, "configured_switch": configured,
            "flops_per_step": matmul_flops(traced.graph), "tensors": tensors, "switches": by_switch}


# ------------------------------------------------------------------------------------ Horovod's timeline

def timeline(path: Path) -> dict[str, dict]:
    """Horovod's timeline (``HOROVOD_TIMELINE``, written by rank 0; horovod/common/timeline.cc): for every
    tensor name, the collectives it went through ("ALLREDUCE", "ALLGATHER", "BROADCAST") and the (dtype,
    shape) of its results, which the timeline records at the end of each collective."""
    events = json.loads(path.read_text(encoding="utf-8"))
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name" and "name" in e["args"]}
    out = {name: {"ops": set(), "results": set()} for name in names.values()}
    for e in events:
        if e.get("ph") == "B" and e["pid"] in names and e["name"] in ("ALLREDUCE", "ALLGATHER", "BROADCAST"):
            out[names[e["pid"]]]["ops"].add(e["name"])
        if e.get("ph") == "E" and "dtype" in e.get("args", {}):
            out[names[e["pid"]]]["results"].add((e["args"]["dtype"], tuple(int(n) for n in
                                                                            re.findall(r"\d+", e["args"]["shape"]))))
    return out


def gradient_collectives(tensors: dict[str, dict]) -> dict[str, dict]:
    """The timeline's tensors of the step's gradients, named under hvd_train/loop.py's GRADIENT_SCOPE."""
    return {name: t for name, t in tensors.items() if name.startswith(GRADIENT_SCOPE + "/")}


DTYPE_BYTES = {"float32": 4, "float16": 2, "int32": 4, "int64": 8}


def timeline_bytes(trainer: str, work: Path, tmp: Path) -> dict:
    """One step of ``trainer`` under horovodrun -np 2 with the timeline on: the gradients' allreduced bytes
    (each result's size) and allgathered bytes (each gathered result holds both ranks' rows)."""
    out, path = tmp / trainer, tmp / f"{trainer}.timeline.json"
    sets = ["train.epochs=1", "train.steps_per_epoch=1", "validation.every_epochs=1000"]
    script, *stage = TRAINERS[trainer][1]
    cmd = ["horovodrun", "-np", "2", sys.executable, str(REPO / script), *stage,
           "--work", str(work), "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HOROVOD_TIMELINE": str(path)})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    grads = gradient_collectives(timeline(path))
    sizes = {op: 0 for op in ("ALLREDUCE", "ALLGATHER")}
    for t in grads.values():
        for dtype, shape in t["results"]:
            sizes[next(iter(t["ops"]))] += DTYPE_BYTES[dtype] * math.prod(shape)
    return {"allreduce_bytes": sizes["ALLREDUCE"], "allgather_bytes_both_ranks": sizes["ALLGATHER"],
            "collectives": len(grads)}


# ------------------------------------------------------------------------------------ main

def melon_sizes(path: Path) -> dict:
    vocabulary = json.loads(path.read_text(encoding="utf-8"))["vocabulary"]
    return {k: int(vocabulary[k]) for k in ("songs", "tags", "artists")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.comm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs/quickstart-small/work")
    parser.add_argument("--melon-sizes", type=Path, default=REPO / "bench/results/inference_melon.json",
                        help="a JSON file whose 'vocabulary' holds melon's songs, tags and artists counts")
    parser.add_argument("--trainers", nargs="+", choices=sorted(TRAINERS), default=list(TRAINERS))
    parser.add_argument("--no-timeline", action="store_true", help="skip the horovodrun -np 2 cross-check")
    args = parser.parse_args(argv)
    if not (args.work / "manifest.json").is_file():
        parser.error(f"{args.work}: not a work directory (no manifest.json); run bash launch/quickstart.sh first")
    melon = melon_sizes(args.melon_sizes)
    result = {"work": str(args.work), "melon_sizes": melon, "trainers": {}}
    previous = results_dir() / "comm.json"
    if set(args.trainers) != set(TRAINERS) and previous.is_file():
        kept = json.loads(previous.read_text(encoding="utf-8"))
        if kept.get("melon_sizes") == melon:
            result["trainers"] = {name: {"work_dir": kept["work"], **entry} for name, entry in kept["trainers"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        for trainer in args.trainers:
            entry = {"work_dir": str(args.work), "work": one_step(trainer, args.work),
                     "melon": one_step(trainer, args.work, melon)}
            if not args.no_timeline:
                entry["timeline"] = timeline_bytes(trainer, args.work, Path(tmp))
                entry["timeline_check"] = timeline_check(entry)
            result["trainers"][trainer] = entry
            print(summary_line(trainer, entry), flush=True)
    save_result("comm", result)
    return 0


def timeline_check(entry: dict) -> dict:
    """Horovod's figures over this process's for the configured switch: 1.0 is the same bytes (and 1.0 where
    both are 0); for allgathers Horovod's result holds both ranks' rows, ours rank 0's, hence 2 x ours."""
    ours = entry["work"]["switches"][entry["work"]["configured_switch"]]
    theirs = entry["timeline"]

    def ratio(a, b):
        return a / b if b else (1.0 if a == 0 else None)

    return {"allreduce_timeline_over_computed": ratio(theirs["allreduce_bytes"], ours["allreduce_bytes"]),
            "allgather_timeline_over_2x_computed": ratio(theirs["allgather_bytes_both_ranks"],
                                                         2 * ours["allgather_bytes"])}


def summary_line(trainer: str, entry: dict) -> str:
    work, melon = entry["work"], entry["melon"]
    switch = work["configured_switch"]
    line = (f"{trainer}: {switch} at np 2: {work['switches'][switch]['sent_per_rank_at_2'] / 1e6:.1f} MB per rank "
            f"and step on WORK, {melon['switches'][switch]['sent_per_rank_at_2'] / 1e6:.1f} MB at melon sizes; "
            f"{melon['flops_per_step'] / 1e9:.3g} GFLOP per step at melon sizes")
    if "timeline_check" in entry:
        check = entry["timeline_check"]
        line += (f"; Horovod's timeline / computed: allreduce {check['allreduce_timeline_over_computed']:.3f}, "
                 f"allgather {check['allgather_timeline_over_2x_computed']:.3f}")
    return line


if __name__ == "__main__":
    sys.exit(main())
