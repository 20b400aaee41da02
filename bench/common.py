"""What the benchmarks share: the repository root, where their results go, and how they run a command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def results_dir() -> Path:
    """``bench/results``, or ``$MELON_BENCH_RESULTS`` (tests point it elsewhere to keep the committed figures)."""
    return Path(os.environ.get("MELON_BENCH_RESULTS") or REPO / "bench" / "results")


def save_result(name: str, result) -> Path:
    """Write ``RESULTS/NAME.json`` (see ``results_dir``) and say where it went."""
    out = results_dir() / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")
    return out


def run(cmd: list[str], log: Path | None = None, env: dict | None = None, name: str | None = None) -> dict:
    """Run ``cmd`` from the repository root and wait for it.

    Returns its output (stdout and stderr together; also written to ``log`` when given), its wall seconds
    and the peak resident memory of the process (``wait4``'s ``ru_maxrss``, in GB). A nonzero exit stops the
    benchmark with the command and the end of its output. ``name``: announce the command on stderr first."""
    if name:
        print(f"[{name}] {' '.join(map(str, cmd))}" + (f"  (log: {log})" if log else ""), file=sys.stderr, flush=True)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with (open(log, "w+", encoding="utf-8") if log else tempfile.TemporaryFile("w+", encoding="utf-8")) as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        output = out.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        where = f" (log: {log})" if log else ""
        raise SystemExit(f"failed ({code}): {' '.join(map(str, cmd))}{where}\n{output[-3000:]}")
    return {"output": output, "wall_s": wall, "peak_rss_gb": usage.ru_maxrss * 1024 / 1024**3}  # ru_maxrss: kB
