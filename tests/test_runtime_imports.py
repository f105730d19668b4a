"""The runtime package (python/qbinfer) needs numpy and the extension only: no module of it imports
torch or the tool set (weights_tools), at module level or inside a function, except the one
dispatch point through which `qbinfer demo` hands over to the tools when they are installed."""

from __future__ import annotations

import ast
import os
from typing import List, Tuple

from conftest import ROOT, run_qbinfer_main

RUNTIME = os.path.join(ROOT, "python", "qbinfer")
FORBIDDEN = ("torch", "weights_tools")
# (file, enclosing function, module): the single place allowed to reach the tools.
DISPATCH = ("demo.py", "tools_demo", "weights_tools.demo_convert")
_DYNAMIC = {"import_module", "__import__"}


def _root(module: str) -> str:
    return module.split(".")[0]


def forbidden_imports(source: str, filename: str) -> List[Tuple[str, str, str]]:
    """(file, enclosing function or "<module>", module) for every import of a FORBIDDEN package:
    `import x`, `from x import y`, and importlib.import_module / __import__ calls. A dynamic
    import whose name is not a literal is reported as "?" (it could be anything)."""
    found: List[Tuple[str, str, str]] = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = child.name
            names: List[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            elif isinstance(child, ast.Call):
                f = child.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if called in _DYNAMIC and child.args:
                    arg = child.args[0]
                    literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                    names = [arg.value if literal else "?"]  # type: ignore[union-attr]
            for name in names:
                if name == "?" or _root(name) in FORBIDDEN:
                    found.append((filename, scope, name))
            visit(child, inner)

    visit(ast.parse(source, filename=filename), "<module>")
    return found


def _runtime_sources():
    for folder, _, files in os.walk(RUNTIME):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, RUNTIME), f.read()


def test_runtime_imports_neither_torch_nor_the_tools_but_through_the_dispatch_point():
    sources = list(_runtime_sources())
    assert any(name == "demo.py" for name, _ in sources), RUNTIME
    found = [hit for name, src in sources for hit in forbidden_imports(src, name)]
    assert found == [DISPATCH], (
        "python/qbinfer must not import torch or weights_tools (the runtime needs numpy and the "
        "extension only); reach the tools through qbinfer.demo.tools_demo. Found: "
        f"{[hit for hit in found if hit != DISPATCH]}"
    )


def test_the_checker_catches_each_form_of_import():
    # The test above passes on a clean tree; prove it would fail on each way of adding one.
    cases = {
        "import torch\n": ("<module>", "torch"),
        "def f():\n    import torch.nn as nn\n": ("f", "torch.nn"),
        "def f():\n    from weights_tools.zoo import build_model\n": ("f", "weights_tools.zoo"),
        "class C:\n    def g(self):\n        from torch import nn\n": ("g", "torch"),
        "import importlib\ndef f():\n    importlib.import_module('torch')\n": ("f", "torch"),
        "def f(n):\n    return __import__(n)\n": ("f", "?"),
    }
    for source, (scope, module) in cases.items():
        assert forbidden_imports(source, "x.py") == [("x.py", scope, module)], source
    # relative imports inside the package and other packages are fine
    assert forbidden_imports("from .model import load\nimport numpy\n", "x.py") == []


def test_demo_arch_without_the_tools_names_the_extra():
    out = run_qbinfer_main("demo", "--arch", "qb_net_small", block_torch=True)
    assert out.returncode != 0
    assert "pip install 'qbinfer[tools]'" in out.stderr and "--arch" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
