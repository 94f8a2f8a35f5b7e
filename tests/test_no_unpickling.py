"""Nothing in the package unpickles, except the one weights-only read of the paper's statistics.

The scan reads the source with :mod:`ast` and flags every call of ``torch.load``,
``pickle.load``/``loads``, ``Unpickler``, ``numpy.load`` with ``allow_pickle``, and every import
of ``pickle``, ``dill``, ``joblib`` or ``cloudpickle`` (but for an exception class imported from
one, to catch it). The one allowed call is
``torch.load(..., weights_only=True)`` in ``read_statistics`` of ``priors/glp_format.py`` (the
release's ``rep_statistics.pt``), and there ``weights_only`` must be the literal ``True``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tl_diffusion_prior

ROOT = Path(tl_diffusion_prior.__file__).parent
ALLOWED = {("priors/glp_format.py", "read_statistics")}
PICKLE_MODULES = {"pickle", "dill", "joblib", "cloudpickle", "_pickle"}


def _call_name(node: ast.Call) -> str:
    parts = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _weights_only_true(node: ast.Call) -> bool:
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in node.keywords
    )


def unpickling_sites(root: Path = ROOT) -> list[str]:
    """``"<file>:<function>: <what>"`` for every unpickling call or import not allowed."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        functions = {
            child: fn.name
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for child in ast.walk(fn)
        }
        for node in ast.walk(tree):
            where = f"{relative}:{functions.get(node, '<module>')}"
            if isinstance(node, ast.Import):
                bad = sorted({a.name.split(".")[0] for a in node.names} & PICKLE_MODULES)
                if bad:
                    found.append(f"{where}: imports {bad}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "") in PICKLE_MODULES:
                # Naming an exception class to catch it reads nothing; anything else may.
                bad = sorted(a.name for a in node.names if not a.name.endswith("Error"))
                if bad:
                    found.append(f"{where}: imports {bad} from {node.module}")
            elif isinstance(node, ast.Call):
                name = _call_name(node)
                if name in ("torch.load", "torch.serialization.load"):
                    allowed = (relative, functions.get(node)) in ALLOWED
                    if not (allowed and _weights_only_true(node)):
                        found.append(f"{where}: {name} (weights_only={_weights_only_true(node)})")
                elif name.endswith(("pickle.load", "pickle.loads", "Unpickler")):
                    found.append(f"{where}: {name}")
                elif name in ("np.load", "numpy.load") and any(
                    k.arg == "allow_pickle" for k in node.keywords
                ):
                    found.append(f"{where}: {name}(allow_pickle=...)")
    return found


def test_the_package_never_unpickles():
    assert unpickling_sites() == []


def test_the_allowed_read_is_there_and_weights_only():
    source = (ROOT / "priors" / "glp_format.py").read_text()
    calls = [
        n
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call) and _call_name(n) == "torch.load"
    ]
    assert len(calls) == 1 and _weights_only_true(calls[0])


def test_the_scan_catches_each_kind_of_unpickling(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "priors").mkdir(parents=True)
    (pkg / "a.py").write_text("import pickle\ndef f(p):\n    return pickle.loads(p)\n")
    (pkg / "b.py").write_text("import torch\ndef g(p):\n    return torch.load(p)\n")
    (pkg / "priors" / "glp_format.py").write_text(
        "import torch\ndef read_statistics(p):\n    return torch.load(p, weights_only=False)\n"
        "def other(p):\n    return torch.load(p, weights_only=True)\n"
    )
    (pkg / "c.py").write_text("import numpy as np\nx = np.load('f', allow_pickle=True)\n")
    (pkg / "d.py").write_text("from pickle import UnpicklingError, loads\n")
    assert unpickling_sites(pkg) == [
        "a.py:<module>: imports ['pickle']",
        "a.py:f: pickle.loads",
        "b.py:g: torch.load (weights_only=False)",
        "c.py:<module>: np.load(allow_pickle=...)",
        "d.py:<module>: imports ['loads'] from pickle",
        "priors/glp_format.py:read_statistics: torch.load (weights_only=False)",
        "priors/glp_format.py:other: torch.load (weights_only=True)",
    ]
