"""No unsafe loading anywhere in the code base: no pickle-family loads, no pickled numpy arrays, no
eval/exec, no yaml.load without a safe loader.

The check reads every ``*.py`` of the top-level packages with the ``ast`` module and looks at *calls*,
resolving import aliases (``import pickle as pk``, ``from numpy import load``), so that a comment or a
string naming these words (this file is full of them) trips nothing, while an aliased call is still
found. The detector itself is tested on snippets first, both ways.

Rules, for every call:

* ``load``/``loads``/``Unpickler``/``open``/``load_all`` of ``pickle``, ``cPickle``, ``_pickle``, ``dill``,
  ``joblib``, ``cloudpickle``, ``shelve``, ``marshal``; any ``read_pickle``; ``torch.load`` without
  ``weights_only=True``;
* ``numpy.load``: in the packages, ``allow_pickle=False`` written out (the project's ``.npz`` artifacts,
  ``release_dates.npz`` and ``weights.npz``, hold plain arrays); in tests, anything but
  ``allow_pickle=True`` is accepted (numpy's default is False). Any call passing ``allow_pickle`` as
  other than the literal ``False``, or passing ``**kwargs`` to ``numpy.load``, is refused;
* ``eval``/``exec`` (the builtins; methods such as ``model.eval()`` are not them);
* ``yaml.load``/``yaml.load_all`` unless the loader is ``SafeLoader``/``CSafeLoader``/``BaseLoader``/
  ``CBaseLoader``; ``yaml.unsafe_load*`` and ``yaml.full_load*`` always.
"""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

PACKAGES = ("data", "models", "hvd_train", "inference", "evaluate", "bench", "launch", "tests")
NOT_CODE = {"configs", "runs", "__pycache__"}  # top-level folders that hold no project Python

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}
PICKLE_LOADS = {"load", "loads", "Unpickler", "open", "load_all"}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}
NUMPY_LOADS = {"numpy.load", "numpy.lib.npyio.load"}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> qualified name, from every import in the file (any scope: imports here are often local)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    names[a.asname] = a.name
                else:
                    root = a.name.split(".")[0]
                    names[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _qualname(node: ast.AST, names: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return names.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _qualname(node.value, names)
        return f"{base}.{node.attr}" if base else None
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def violations(source: str, filename: str = "<snippet>", in_tests: bool = False) -> list[str]:
    """``filename:line: what`` for every unsafe loading call in ``source``."""
    tree = ast.parse(source, filename=filename)
    names = _aliases(tree)
    found = []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        q = _qualname(call.func, names) or ""
        root, last = q.split(".")[0], q.rsplit(".", 1)[-1]
        problem = None
        if q in {"eval", "exec", "builtins.eval", "builtins.exec"}:
            problem = f"{q}() call"
        elif root in PICKLE_MODULES and "." in q and last in PICKLE_LOADS:
            problem = f"{q}() deserialises pickled objects"
        elif last == "read_pickle":
            problem = f"{q}() deserialises pickled objects"
        elif q == "torch.load" and not _is_const(_keyword(call, "weights_only"), True):
            problem = "torch.load() without weights_only=True unpickles"
        elif q in {"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"}:
            problem = f"{q}() can build arbitrary objects; use yaml.safe_load"
        elif q in {"yaml.load", "yaml.load_all"}:
            loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
            if loader is None or _qualname(loader, names) not in SAFE_YAML_LOADERS:
                problem = f"{q}() without SafeLoader; use yaml.safe_load"
        if problem is None:
            allow = _keyword(call, "allow_pickle")
            if allow is not None and not _is_const(allow, False):
                problem = f"{q or 'call'}(allow_pickle={ast.unparse(allow)}) may unpickle"
            elif q in NUMPY_LOADS:
                if any(k.arg is None for k in call.keywords):
                    problem = f"{q}(**...) hides allow_pickle"
                elif allow is None and not in_tests:
                    problem = f"{q}() without an explicit allow_pickle=False"
        if problem:
            found.append(f"{filename}:{call.lineno}: {problem}")
    return found


# --------------------------------------------------------------------------------------------------
# The detector, on snippets
# --------------------------------------------------------------------------------------------------

UNSAFE = [
    "import pickle\npickle.load(f)",
    "import pickle as pk\npk.loads(b)",
    "from pickle import loads\nloads(b)",
    "from pickle import Unpickler as U\nU(f).load()",
    "import cPickle\ncPickle.load(f)",
    "import _pickle\n_pickle.loads(b)",
    "import dill\ndill.loads(b)",
    "import joblib\njoblib.load('model.pkl')",
    "from joblib import load as jl\njl(p)",
    "import shelve\nshelve.open('db')",
    "import pandas as pd\npd.read_pickle(p)",
    "import torch\ntorch.load(p)",
    "import numpy as np\nnp.load(p, allow_pickle=True)",
    "import numpy as np\nnp.load(p, allow_pickle=flag)",
    "import numpy\nnumpy.load(p)",
    "from numpy import load\nload(p)",
    "import numpy as np\nnp.load(p, **options)",
    "import numpy as np\nnp.lib.format.read_array(f, allow_pickle=True)",
    "eval('1 + 1')",
    "def f(code):\n    exec(code, {})",
    "import builtins\nbuiltins.eval(s)",
    "import yaml\nyaml.load(s)",
    "import yaml\nyaml.load(s, Loader=yaml.Loader)",
    "import yaml\nyaml.load(s, yaml.FullLoader)",
    "import yaml\nyaml.load_all(s, Loader=yaml.UnsafeLoader)",
    "import yaml\nyaml.unsafe_load(s)",
    "import yaml\nyaml.full_load(s)",
    "from yaml import load\nload(s)",
    "import yaml as y\ny.load(s)",
]
SAFE = [
    "# pickle.load(f); eval(x); yaml.load(s)\nx = 'np.load(p, allow_pickle=True) exec(c) joblib.load(m)'",
    'def f():\n    """eval(x) and pickle.loads(b) in a docstring."""',
    "import numpy as np\nnp.load(p, allow_pickle=False)",
    "import numpy as np\nwith np.load(p, allow_pickle=False) as z:\n    z['a']",
    "import yaml\nyaml.safe_load(s)",
    "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
    "import yaml\nyaml.load(s, yaml.CSafeLoader)",
    "import json\njson.loads(s); json.load(f)",
    "model.eval()",
    "tensor.eval(session=s)",
    "import torch\ntorch.load(p, weights_only=True)",
    "import numpy as np\nnp.savez(f, a=a)",
]


@pytest.mark.parametrize("source", UNSAFE)
def test_detector_finds_unsafe_loading(source):
    assert violations(source), source


@pytest.mark.parametrize("source", SAFE)
def test_detector_ignores_safe_code_comments_and_strings(source):
    assert violations(source) == []


def test_tests_may_rely_on_numpy_default_but_not_allow_pickle_true():
    assert violations("import numpy as np\nnp.load(p)", in_tests=True) == []
    assert violations("import numpy as np\nnp.load(p, allow_pickle=True)", in_tests=True)


# --------------------------------------------------------------------------------------------------
# The code base
# --------------------------------------------------------------------------------------------------

def python_files() -> list[Path]:
    files = sorted(REPO.glob("*.py"))
    for package in PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def test_every_top_level_python_folder_is_scanned():
    """A new top-level package is scanned too: it must be added to PACKAGES (or shown to hold no code)."""
    for entry in REPO.iterdir():
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in PACKAGES:
            if entry.name in NOT_CODE:
                continue
            assert not any(entry.rglob("*.py")), f"{entry.name}/ holds Python files: add it to PACKAGES"


def test_code_base_has_no_unsafe_loading():
    files = python_files()
    assert len(files) > 20, files  # the scan really reads the code base
    found, numpy_loads = [], 0
    for path in files:
        relative = path.relative_to(REPO)
        source = path.read_text(encoding="utf-8")
        found += violations(source, str(relative), in_tests=relative.parts[0] == "tests")
        tree = ast.parse(source)
        names = _aliases(tree)
        numpy_loads += sum(isinstance(n, ast.Call) and _qualname(n.func, names) in NUMPY_LOADS for n in ast.walk(tree))
    assert not found, "unsafe loading:\n" + "\n".join(found)
    assert numpy_loads >= 1, "no numpy.load call found: the scan is not looking where the artifacts are read"


def test_numpy_load_refuses_pickles_by_default():
    """The default the tests rely on: numpy.load's allow_pickle is False."""
    assert inspect.signature(np.load).parameters["allow_pickle"].default is False


class _Trap:
    """Unpickling it would create the marker file: proof that nothing was unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_export_loader_refuses_a_pickled_npz_without_running_it(tmp_path):
    """The project's weights.npz reader (models.export.read_export) never unpickles an object array."""
    from models.export import read_export

    marker = tmp_path / "pwned"
    export = tmp_path / "export"
    export.mkdir()
    trap = np.empty(1, dtype=object)
    trap[0] = _Trap(str(marker))
    np.savez(export / "weights.npz", embedding=np.zeros((2, 3), np.float32), trap=trap)
    (export / "config.json").write_text(json.dumps({"model": "dae"}))
    with pytest.raises(ValueError, match="allow_pickle"):
        read_export(export)  # it reads every array, the trap included
    assert not marker.exists()
    np.savez(export / "weights.npz", embedding=np.zeros((2, 3), np.float32))
    assert read_export(export)[0]["embedding"].shape == (2, 3)  # plain arrays load


def test_a_real_trainer_export_holds_plain_arrays_only(dae_run):
    """The weights.npz the DAE trainer really writes (the session's two-rank run) loads with pickles refused:
    every array numeric, none an object array; its config.json is plain JSON."""
    from models.export import read_export

    run, _ = dae_run
    with np.load(run / "export/weights.npz", allow_pickle=False) as weights:
        assert weights.files and all(weights[n].dtype != object for n in weights.files)
        names = set(weights.files)
    arrays, config = read_export(run / "export")
    assert set(arrays) == names and config["model"] == "dae"
