"""The package's layers point one way (import-linter's ``layers`` contract in ``pyproject.toml``), and no
module hides an import inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "monai_anon_app"


def test_the_layers_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.is_file(), "import-linter is missing: pip install -e .[test]"
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Layers point one way KEPT" in r.stdout


def function_level_imports(source: str) -> list[int]:
    """Line numbers of the import statements inside a function or method of ``source``."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines |= {inner.lineno for inner in ast.walk(node) if isinstance(inner, (ast.Import, ast.ImportFrom))}
    return sorted(lines)


def test_no_module_imports_inside_a_function():
    found = [f"{p.relative_to(ROOT)}:{line}" for p in sorted(PACKAGE.rglob("*.py"))
             for line in function_level_imports(p.read_text())]
    assert found == [], found


def test_the_scan_sees_imports_in_functions_and_methods():
    source = "import os\n\ndef f():\n    import json\n\nclass A:\n    def m(self):\n        from os import path\n"
    assert function_level_imports(source) == [4, 8]
