"""bench.common.run: the peak memory it reports is the command's own, whatever its caller holds."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from bench.common import run

ALLOCATE = "import numpy as np; a = np.ones({n}); a += 1"


def test_the_peak_is_the_command_s_own_not_its_caller_s():
    held = np.ones(512 * 1024**2 // 8)  # the benchmark process holds 512 MB
    held += 1
    small = run([sys.executable, "-c", "pass"])
    big = run([sys.executable, "-c", ALLOCATE.format(n=256 * 1024**2 // 8)])
    assert small["peak_rss_gb"] < 0.1, small["peak_rss_gb"]
    assert 0.25 <= big["peak_rss_gb"] < 0.4, big["peak_rss_gb"]
    assert big["wall_s"] > 0
    del held


def test_output_and_log_and_failure(tmp_path):
    log = tmp_path / "logs/step.log"
    out = run([sys.executable, "-c", "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"], log)
    assert "to stdout" in out["output"] and "to stderr" in out["output"]
    assert log.read_text() == out["output"]
    with pytest.raises(SystemExit, match=r"failed \(3\).*\n.*last words"):
        run([sys.executable, "-c", "import sys; print('last words'); sys.exit(3)"])
    with pytest.raises(SystemExit, match=r"failed \(127\): no-such-command\ncannot run no-such-command: No such file"):
        run(["no-such-command"])
