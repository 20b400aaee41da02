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


def save_report(name: str, result: dict, text: str) -> None:
    """Write ``RESULTS/NAME.json`` (save_result) and its Markdown ``text`` (save_markdown)."""
    save_result(name, result)
    save_markdown(name, text)


def save_markdown(name: str, text: str) -> None:
    """Write ``text`` as ``RESULTS/NAME.md`` and print it."""
    (results_dir() / f"{name}.md").write_text(text, encoding="utf-8")
    print(text)


def save_result(name: str, result) -> Path:
    """Write ``RESULTS/NAME.json`` (see ``results_dir``) and say where it went."""
    out = results_dir() / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")
    return out


# A forked child's peak RSS (ru_maxrss) starts at its parent's RSS at the fork, so a benchmark process that
# holds gigabytes (TensorFlow, a loaded data set) would add them to every command it measures. Commands are
# therefore started by this small launcher, and the peak is that of the launcher's own child.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        print(f"cannot run {sys.argv[2]}: {e.strerror}", file=sys.stderr, flush=True)
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def run(cmd: list[str], log: Path | None = None, env: dict | None = None, name: str | None = None) -> dict:
    """Run ``cmd`` from the repository root and wait for it.

    Returns its output (stdout and stderr together; also written to ``log`` when given), its wall seconds
    and its peak resident memory (``wait4``'s ``ru_maxrss``, in GB, through :data:`_LAUNCHER`). A nonzero
    exit stops the benchmark with the command and the end of its output. ``name``: announce the command on
    stderr first."""
    if name:
        print(f"[{name}] {' '.join(map(str, cmd))}" + (f"  (log: {log})" if log else ""), file=sys.stderr, flush=True)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with (open(log, "w+", encoding="utf-8") if log else tempfile.TemporaryFile("w+", encoding="utf-8")) as out, \
            tempfile.NamedTemporaryFile("r", suffix=".maxrss") as peak:
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-S", "-c", _LAUNCHER, peak.name, *map(str, cmd)], cwd=REPO,
                               stdout=out, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - start
        out.seek(0)
        output = out.read()
        peak_kb = int(peak.read() or 0)
    if code != 0:
        where = f" (log: {log})" if log else ""
        raise SystemExit(f"failed ({code}): {' '.join(map(str, cmd))}{where}\n{output[-3000:]}")
    return {"output": output, "wall_s": wall, "peak_rss_gb": peak_kb * 1024 / 1024**3}  # ru_maxrss: kB
