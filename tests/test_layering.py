"""Layering: data -> models -> {hvd_train, inference} -> evaluate -> bench, each layer importing only those
below it (data/task.py holds the task's constants, question types, nDCG and protocol, for every layer), no
import cycle between the project's modules, serving never reaches the trainers or Horovod, and the trainers'
one epoch loop and the elastic state stay apart."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO

TRAINING = ("hvd_train", "horovod", "mpi4py")
# each package's layer: a module may import its own package and packages of a lower layer, never a higher
# one or a sibling (hvd_train and inference are siblings: serving never imports the trainers, nor they it)
LAYERS = {"data": 0, "models": 1, "hvd_train": 2, "inference": 2, "evaluate": 3, "bench": 4}


def imported_modules(path, with_names: bool = False) -> set[str]:
    """Every module a file imports, at its top or inside a function; ``with_names``: "from m import x" also
    gives "m.x" (x may be a module of package m)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            if with_names:
                names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def project_modules() -> dict[str, object]:
    """Every module of the layered packages, "package.module" -> its path."""
    return {f"{package}.{path.stem}": path for package in LAYERS for path in sorted((REPO / package).glob("*.py"))}


def project_imports(path, modules) -> set[str]:
    """The project modules (of ``modules``) a file imports, "from package import module" included."""
    out = set()
    for name in imported_modules(path, with_names=True):
        while name and name not in modules and name.split(".")[0] in LAYERS:
            name = name.rpartition(".")[0]
        if name in modules:
            out.add(name)
    return out


def test_every_module_imports_only_its_own_layer_and_those_below():
    upward = []
    for module, path in project_modules().items():
        package = module.split(".")[0]
        for name in imported_modules(path):
            other = name.split(".")[0]
            if other in LAYERS and other != package and LAYERS[other] >= LAYERS[package]:
                upward.append(f"{module} imports {name}")
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_the_projects_modules():
    modules = project_modules()
    graph = {m: project_imports(path, modules) - {m} for m, path in modules.items()}
    cycles, done = [], set()

    def visit(module, trail):
        if module in trail:
            cycles.append(" -> ".join(trail[trail.index(module):] + [module]))
            return
        if module in done:
            return
        for other in sorted(graph[module]):
            visit(other, trail + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "\n".join(cycles)


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
