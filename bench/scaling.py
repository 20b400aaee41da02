"""A scaling model for data-parallel training on GPU clusters, from the bytes and FLOPs bench.comm measured.

    python -m bench.scaling [--comm bench/results/comm.json] [--compute-fraction 0.4] [--bandwidth-fraction 0.8]

Weak scaling: every GPU keeps its per-rank batch, so a step's arithmetic per GPU is the same at every N,
and the efficiency at N GPUs is t(1) / t(N). With ``g`` GPUs per node (8) and ``N`` GPUs in all:

    t(N)       = t_compute + t_comm(N)                    (no overlap of communication with the backward pass)
    t_compute  = F / (peak x compute_fraction)             F: FLOPs per step per GPU (bench.comm, melon sizes);
                                                           peak: the GPU's dense tensor-core peak for the step's
                                                           matmul precision (float16 with mixed precision, else
                                                           TF32, which TensorFlow uses for float32 matmuls on
                                                           Ampere and later)
    t_comm(N)  = [2(N-1)/N x A + (N-1) x G] / (B x bandwidth_fraction)
                                                           A, G: allreduced and allgathered bytes per step
                                                           (bench.comm's switches); ring collectives
    B          = NVLink bandwidth per GPU and direction    when N <= g (one node)
               = g x NIC bandwidth per GPU                 when N > g: NCCL runs one ring per NIC (rail-optimised
                                                           nodes, one NIC per GPU), so a node's inter-node traffic
                                                           spreads over its g NICs: the bus bandwidth nccl-tests
                                                           reports (busbw = algbw x 2(N-1)/N) is about g NICs'
               = 1 x NIC bandwidth                         when N > g with ``--nics-per-node 1`` (one NIC a node)

Horovod's knobs change the constants, not the form: tensor fusion (``HOROVOD_FUSION_THRESHOLD``, 128 MB by
default) packs small gradients into one collective, so the per-collective latency this model leaves out
stays small when the fusion buffer holds a step's gradients; ``HOROVOD_CYCLE_TIME`` (ms between fusion
rounds) adds up to one cycle per step; ``HOROVOD_HIERARCHICAL_ALLREDUCE=1`` (reduce-scatter in the node,
allreduce across nodes, allgather in the node) moves 2(M-1)/M x A/g bytes per GPU over the NICs for M nodes,
what the rail-optimised ring above already assumes, so the model predicts no gain from it on such nodes and
a g-fold gain on nodes with one NIC.

The constants (:data:`GPU`, :data:`LINKS`) are public figures, cited next to them; the two fractions are
assumptions, stated in every table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.comm import sent_per_rank
from bench.common import REPO, results_dir, save_result

GPU = {"name": "H100 SXM5", "fp16_tflops": 989.4, "tf32_tflops": 494.7,
       "source": "NVIDIA H100 Tensor Core GPU datasheet: dense (not sparse) FP16/BF16 and TF32 tensor-core peaks, SXM5"}
LINKS = {
    "nvlink_GBps": 450.0,  # per GPU and direction
    "nvlink_source": "NVIDIA H100 datasheet: fourth-generation NVLink, 900 GB/s per GPU (both directions together)",
    "nic_GBps": 50.0,  # one 400 Gb/s NDR InfiniBand port
    "nic_source": "NVIDIA DGX H100 user guide: eight single-port ConnectX-7 400 Gb/s NDR InfiniBand adapters for "
                  "the compute fabric, one per GPU",
    "gpus_per_node": 8,
}
GPU_COUNTS = (1, 8, 32, 128)


def step_time(trainer: dict, switch: str, n: int, mixed: bool, fractions: dict, nics_per_node: int,
              accumulation: int = 1) -> dict:
    """Predicted compute and communication seconds of one step at ``n`` GPUs (the module docstring's model);
    a step of ``accumulation`` batches does that many batches' FLOPs before its one set of collectives."""
    melon = trainer["melon"]
    peak = (GPU["fp16_tflops"] if mixed else GPU["tf32_tflops"]) * 1e12
    compute = accumulation * melon["flops_per_step"] / (peak * fractions["compute"])
    s = melon["switches"][switch]
    g = LINKS["gpus_per_node"]
    bandwidth = (LINKS["nvlink_GBps"] if n <= g else min(nics_per_node, g) * LINKS["nic_GBps"]) * 1e9
    comm = sent_per_rank(s, n) / (bandwidth * fractions["bandwidth"])
    return {"compute_ms": compute * 1e3, "comm_ms": comm * 1e3, "efficiency": compute / (compute + comm)}


# train.accumulation_steps modelled for the DAE (dense_fp16): 2, measured on quality (bench.dae_curves), and
# 12, the least that meets both TARGETS with TF32 (the "batch for" columns of the k = 1 rows over 128)
ACCUMULATED = {"dae": (2, 12)}
TARGETS = {8: 0.85, 32: 0.70}  # the scaling issue's bars: efficiency at 8 GPUs in a node, 32 over 4 nodes
MIN_FLOPS_PER_BYTE = 1.0  # below this many matmul FLOPs per byte of tables a trainer is memory-bound


def batch_for(row: dict, batch_size: int, n: int, target: float) -> int | None:
    """The per-rank batch at which the efficiency at ``n`` GPUs reaches ``target``, when a step's bytes do not
    grow with the batch (allreduced dense gradients) and its FLOPs grow linearly: b x target/(1-target) x
    comm/compute. None where the allgathered rows grow with the batch too."""
    if row["allgather_bytes"]:
        return None
    t = row[str(n)]
    return max(batch_size, round(batch_size * target / (1 - target) * t["comm_ms"] / t["compute_ms"]))


def predict(comm: dict, fractions: dict, nics_per_node: int) -> dict:
    """For every trainer, switch and precision: predicted step times and efficiency at :data:`GPU_COUNTS`, and
    the per-rank batch the :data:`TARGETS` would need. A trainer under MIN_FLOPS_PER_BYTE FLOPs per byte of
    its tables (Word2Vec: gathers and element-wise ops, no large matmul) is memory-bound: the FLOP model
    does not apply and it is left out."""
    out = {}
    for name, trainer in comm["trainers"].items():
        melon, rows = trainer["melon"], {}
        dense = melon["switches"]["dense"]["allreduce_bytes"]
        if melon["flops_per_step"] < MIN_FLOPS_PER_BYTE * dense:
            out[name] = {"skipped": f"{melon['flops_per_step'] / 1e9:.3g} GFLOP per step of matmuls against "
                                    f"{dense / 1e6:.0f} MB of tables: memory-bound, the FLOP model does not apply"}
            continue
        settings = [(switch, 1) for switch in melon["switches"]]
        settings += [("dense_fp16", k) for k in ACCUMULATED.get(name, ())]
        for switch, k in settings:
            s = melon["switches"][switch]
            if switch == "rows" and not s["allgather_bytes"]:
                continue  # no gradient travels as rows: the same as dense
            for mixed in (False, True):
                key = f"{switch}, {'mixed precision' if mixed else 'float32 (TF32)'}" + (f", {k} accumulated" if k > 1 else "")
                row = {"allgather_bytes": s["allgather_bytes"], "accumulation": k,
                       "bytes_per_playlist_at_8": round(sent_per_rank(s, 8) / (k * melon["batch_size"])),
                       **{str(n): step_time(trainer, switch, n, mixed, fractions, nics_per_node, k) for n in GPU_COUNTS}}
                row["batch_for_targets"] = {str(n): batch_for(row, k * melon["batch_size"], n, t)
                                            for n, t in TARGETS.items()}
                rows[key] = row
        out[name] = {"batch_size": melon["batch_size"], "flops_per_step": melon["flops_per_step"], "rows": rows}
    return out


def markdown(prediction: dict, fractions: dict, nics_per_node: int) -> str:
    lines = [f"Predicted efficiency t(1)/t(N) at melon sizes, {GPU['name']}, {LINKS['gpus_per_node']} GPUs a node, "
             f"{nics_per_node} NIC(s) a node; compute fraction {fractions['compute']}, bandwidth fraction "
             f"{fractions['bandwidth']}, no overlap (`python -m bench.scaling`). The last two columns: the per-rank "
             f"batch at which the efficiency would reach {TARGETS[8]:.0%} at 8 GPUs and {TARGETS[32]:.0%} at 32 "
             "(the bytes stay, the FLOPs grow with the batch). `128 x k`: k batches accumulated per step "
             "(`train.accumulation_steps`), one allreduce per k batches.", "",
             "| trainer | switch, precision | batch | MB per playlist at 8 | step ms at 1 | 8 | 32 | 128 | "
             "batch for 85% at 8 | for 70% at 32 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    skipped = []
    for name, p in prediction.items():
        if "skipped" in p:
            skipped.append(f"- {name}: {p['skipped']}.")
            continue
        for key, row in p["rows"].items():
            cells = [f"{row['1']['compute_ms']:.2f}"] + [f"{row[str(n)]['efficiency']:.0%}" for n in GPU_COUNTS[1:]]
            cells += ["n/a" if b is None else f"{b:,}" for b in row["batch_for_targets"].values()]
            batch = f"{p['batch_size']} x {row['accumulation']}" if row["accumulation"] > 1 else str(p["batch_size"])
            lines.append(f"| {name} | {key} | {batch} | {row['bytes_per_playlist_at_8'] / 1e6:.3f} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + skipped if skipped else [])) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--comm", type=Path, default=REPO / "bench/results/comm.json")
    parser.add_argument("--compute-fraction", type=float, default=0.4,
                        help="achieved fraction of the GPU's tensor-core peak (an assumption)")
    parser.add_argument("--bandwidth-fraction", type=float, default=0.8,
                        help="achieved fraction of the link bandwidth (an assumption)")
    parser.add_argument("--nics-per-node", type=int, default=LINKS["gpus_per_node"])
    args = parser.parse_args(argv)
    if not args.comm.is_file():
        parser.error(f"{args.comm}: no such file; run python -m bench.comm first")
    fractions = {"compute": args.compute_fraction, "bandwidth": args.bandwidth_fraction}
    prediction = predict(json.loads(args.comm.read_text(encoding="utf-8")), fractions, args.nics_per_node)
    table = markdown(prediction, fractions, args.nics_per_node)
    print(table)
    save_result("scaling", {"gpu": GPU, "links": LINKS, "fractions": fractions, "nics_per_node": args.nics_per_node,
                            "gpu_counts": list(GPU_COUNTS), "prediction": prediction, "table": table})
    (results_dir() / "scaling.md").write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
