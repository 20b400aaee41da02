"""Layering: data -> models -> {hvd_train, inference} -> evaluate -> bench, each layer importing only those
below it (data/task.py holds the task's constants, question types, nDCG and protocol, for every layer), no
import cycle between the project's modules, serving never reaches the trainers or Horovod, and the trainers'
one epoch loop and the elastic state stay apart; a project module is imported inside a function only when
importing it loads a heavy library (TensorFlow, SciPy, Horovod, ...)."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO

TRAINING = ("hvd_train", "horovod", "mpi4py")
# libraries slow to import (seconds, or a native runtime): a project module that loads one at its top may be
# imported inside the function that needs it, so that a CLI's --help and the light tools start fast
HEAVY = ("tensorflow", "scipy", "horovod", "mpi4py", "matplotlib", "sentencepiece", "implicit")
# each package's layer: a module may import its own package and packages of a lower layer, never a higher
# one or a sibling (hvd_train and inference are siblings: serving never imports the trainers, nor they it)
LAYERS = {"data": 0, "models": 1, "hvd_train": 2, "inference": 2, "evaluate": 3, "bench": 4}


def statement_modules(node, with_names: bool = False) -> set[str]:
    """The modules one import statement names (none for another node); ``with_names``: "from m import x" also
    gives "m.x" (x may be a module of package m)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return {node.module} | ({f"{node.module}.{a.name}" for a in node.names} if with_names else set())
    return set()


def imported_modules(path, with_names: bool = False) -> set[str]:
    """Every module a file imports, at its top or inside a function (``with_names``: see statement_modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return set().union(*(statement_modules(n, with_names) for n in ast.walk(tree)))


def deferred_imports(tree) -> list[ast.stmt]:
    """The import statements inside a function of a parsed file, in the order of their lines."""
    inner = {n for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return sorted(inner, key=lambda n: n.lineno)


def top_level_imports(path, with_names: bool = False) -> set[str]:
    """The modules a file imports when it is imported: outside every function (a module-level ``if`` or
    ``try`` and a class body included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = set(deferred_imports(tree))
    return set().union(*(statement_modules(n, with_names) for n in ast.walk(tree) if n not in inner))


def project_modules() -> dict[str, object]:
    """Every module of the layered packages, "package.module" -> its path."""
    return {f"{package}.{path.stem}": path for package in LAYERS for path in sorted((REPO / package).glob("*.py"))}


def project_module(name: str, modules) -> str | None:
    """The project module (of ``modules``) an imported name is or lies in ("data.melon.write_json":
    "data.melon"); None for a package or another library."""
    while name and name not in modules and name.split(".")[0] in LAYERS:
        name = name.rpartition(".")[0]
    return name if name in modules else None


def project_imports(path, modules) -> set[str]:
    """The project modules (of ``modules``) a file imports, "from package import module" included."""
    return {m for name in imported_modules(path, with_names=True) if (m := project_module(name, modules))}


def heavy_modules(modules) -> set[str]:
    """The project modules whose import loads a heavy library (HEAVY): one they import at their top, or that a
    project module they import at their top loads (their package's __init__ included), to any depth."""
    top = {m: top_level_imports(path, with_names=True) for m, path in modules.items()}
    heavy = {m for m, names in top.items() if any(n.split(".")[0] in HEAVY for n in names)}
    loads = {m: {project_module(n, modules) for n in names} - {None} | {f"{m.split('.')[0]}.__init__"}
             for m, names in top.items()}
    while more := {m for m in modules if loads[m] & heavy} - heavy:
        heavy |= more
    return heavy


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


def test_project_imports_are_deferred_only_to_avoid_a_heavy_library():
    """A project module is imported at the top of the file that uses it, so that the file's dependencies read
    in one place; inside a function only when importing it loads TensorFlow, SciPy, Horovod or another heavy
    library (heavy_modules), which keeps a CLI's --help and the light tools fast. The heavy libraries
    themselves are imported where each file needs them."""
    modules = project_modules()
    heavy = heavy_modules(modules)
    light = []
    for path in modules.values():
        for node in deferred_imports(ast.parse(path.read_text(encoding="utf-8"))):
            deferred = {project_module(n, modules) for n in statement_modules(node, with_names=True)} - {None}
            for module in sorted(deferred - heavy):
                light.append(f"{path.relative_to(REPO)}:{node.lineno} import {module}")
    assert not light, "deferred, yet loads no heavy library: import at the top\n" + "\n".join(light)


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
