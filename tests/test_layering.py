"""Layering: data -> models -> inference -> evaluate never reaches the trainers or Horovod, and the trainers' one
epoch loop and the elastic state stay apart."""

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
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         timeout=300).stdout
    assert out.strip() == "[]"


def test_the_epoch_loop_and_the_elastic_state_do_not_import_each_other():
    """One epoch loop (hvd_train/loop.py) for fixed and elastic training; hvd_train/driver.py joins the two."""
    loop, elastic = REPO / "hvd_train/loop.py", REPO / "hvd_train/elastic.py"
    assert not {"hvd_train.elastic", "hvd_train.driver"} & imported_modules(loop)
    assert not {"hvd_train.loop", "hvd_train.driver"} & imported_modules(elastic)
    # "from hvd_train import elastic" names the package, not the module: catch that spelling too
    for path, other in ((loop, "elastic"), (elastic, "loop")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "hvd_train":
                assert other not in {a.name for a in node.names}, f"{path.name} imports {other}"
