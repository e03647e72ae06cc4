"""The tests' own layout: no test module imports from another; what several share is in tests/helpers.py
(and the shared fixtures in tests/conftest.py)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TEST_MODULES = {p.stem for p in TESTS.glob("test_*.py")}


def imported_test_modules(source: str, test_modules: set[str] = TEST_MODULES) -> list[tuple[int, str]]:
    """(line, module) of every import of one of ``test_modules`` in ``source``, at any depth:
    ``import test_x``, ``from test_x import ...``, ``from tests.test_x import ...``, ``from . import test_x``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            modules = [base] + [f"{base}.{a.name}" if base else a.name for a in node.names]
        else:
            continue
        for module in modules:
            hit = next((part for part in module.split(".") if part in test_modules), None)
            if hit:
                found.append((node.lineno, hit))
                break
    return found


def test_no_test_module_imports_from_another():
    assert len(TEST_MODULES) > 10, TESTS  # the folder was found
    offenders = [f"tests/{path.name}:{line}: imports {module}"
                 for path in sorted(TESTS.glob("test_*.py"))
                 for line, module in imported_test_modules(path.read_text())]
    assert not offenders, ("a test module imports from another; move what they share to tests/helpers.py "
                           "(fixtures to tests/conftest.py): " + "; ".join(offenders))


def test_the_check_sees_every_form_of_import():
    modules = {"test_download", "test_oxford"}
    source = ("import os\nfrom helpers import FAST\nimport test_download\nfrom test_oxford import x\n"
              "from tests.test_download import y\nfrom . import test_oxford\n"
              "def f():\n    from test_download import z\n")
    assert imported_test_modules(source, modules) == [(3, "test_download"), (4, "test_oxford"),
                                                      (5, "test_download"), (6, "test_oxford"), (8, "test_download")]
    assert imported_test_modules("from helpers import x\nimport pytest\nfrom conftest import require_weights\n",
                                 modules) == []
