"""The code a step runs, from the package's import graph: what its DVC stage depends on.

Every ``import`` statement of a module counts, at any depth (a function-level import runs when the
function does), and importing ``a.b.c`` runs ``a``'s and ``a.b``'s ``__init__`` too. A step's code is
the closure of its own module, of its method's extraction or family module where it runs one
(methods are imported by name at run time, which no import statement shows: the declaration says
so), and of the frame every step runs in (:data:`FRAME`). The command line imports every step module
to find the step by name; only the step's own closure is its code, and :mod:`.command` checks after
each run that the step loaded nothing outside it.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from .. import methods
from .declare import Step

PACKAGE = "instance_search"
# the frame of every step: arguments, logging, threads, one-line errors (with its imports), and the
# command line that finds the step (alone: what it imports to find it is not run)
FRAME = ("instance_search.pipeline.runner", "instance_search.pipeline.declare")
COMMAND = "instance_search.pipeline.command"
PARTS = ("extraction", "indexing", "family")  # a method's modules (methods.module), each built on the ones before
ROOT = Path(__file__).resolve().parent.parent  # src/instance_search


def module_file(module: str) -> Path | None:
    parts = module.split(".")[1:]
    base = ROOT.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def imports(module: str) -> frozenset[str]:
    """The package's modules that ``module``'s import statements name (each with its parent packages)."""
    path = module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                parent = ".".join([*base, node.module] if node.module else base)
            else:
                parent = node.module or ""
            # from P import x: x is a submodule of P, or a name defined in P
            names = [parent, *(f"{parent}.{a.name}" for a in node.names if module_file(f"{parent}.{a.name}"))]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                found.update(m for m in _with_parents(name) if module_file(m))
    return frozenset(found)


def closure(modules: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [m for start in modules for m in _with_parents(start)]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(imports(m) - seen)
    return seen


def step_modules(s: Step, method: str | None = None) -> set[str]:
    start = [*FRAME, s.module]
    if s.method_code:
        if method is None:
            raise ValueError(f"step {s.name} runs its method's code: name the method")
        # a method's indexing is built on its extraction, its family on both: each runs the parts below it
        parts = PARTS[:PARTS.index(s.method_code) + 1]
        start.extend(methods.module(method, part) for part in parts)
    return closure(start) | {COMMAND}


def step_files(s: Step, method: str | None = None) -> list[str]:
    """The files of :func:`step_modules`, relative to the repository root, sorted."""
    repo = ROOT.parent.parent
    return sorted(str(module_file(m).relative_to(repo)) for m in step_modules(s, method))
