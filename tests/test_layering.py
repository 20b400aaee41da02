"""The serving side's layering: data -> models -> inference -> evaluate never reaches the trainers or Horovod."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO

TRAINING = ("hvd_train", "horovod", "mpi4py")


def imported_modules(path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_serving_module_imports_the_trainers_or_horovod():
    for package in ("data", "models", "inference", "evaluate"):
        for path in sorted((REPO / package).glob("*.py")):
            if path.name == "preprocess.py":  # the MPI entry point that writes work directories
                continue
            bad = sorted(m for m in imported_modules(path) if m.split(".")[0] in TRAINING)
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_importing_the_ensemble_and_recommend_loads_neither_hvd_train_nor_horovod():
    code = ("import sys, inference.ensemble, inference.recommend, inference.fit_blend, inference.neighbours; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hvd_train', 'horovod', 'mpi4py')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
