"""The library's layers point one way (design.md): core <- features <- methods <- steps / index <- scripts,
cli, web; no module outside the methods package names a method; each formula is written once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "instance_search"
# The layer of each part of the package, lowest first; a module may import only from its own layer or below.
LAYERS = [
    {"errors", "io", "config", "groundtruth", "metrics", "download", "hashing", "devices", "threads", "versions",
     "retrieval"},
    {"features", "datasets", "weights"},  # weights: the pretrained files of features, fetched like datasets
    {"methods"},
    {"index", "engine", "ranking_files", "evaluate", "report", "pipeline", "photos"},
    {"query"},
    {"api"},  # the public Python API: open_index, SearchIndex.query (instance_search/__init__.py re-exports it)
    {"web", "cli", "__main__"},
]


def _part(module: str) -> str:
    return module.split(".")[0]


def _layer(part: str) -> int:
    for k, layer in enumerate(LAYERS):
        if part in layer:
            return k
    raise AssertionError(f"{part}: not assigned to a layer in tests/test_layers.py")


def _imports(path: Path) -> set[str]:
    """The package's parts imported by a module (relative imports resolved)."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    here = list(rel.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = [*base, *(node.module.split(".") if node.module else [])]
                if not target:  # from . import x, y: the names are the parts
                    found.update(a.name for a in node.names)
                else:
                    found.add(target[0])
            elif node.module and node.module.startswith("instance_search."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("instance_search."))
    return found


def test_no_module_imports_from_a_higher_layer():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if part == "__init__":
            continue
        for imported in _imports(path):
            if imported != part and _layer(imported) > _layer(part):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert not wrong, wrong


def test_retrieval_core_imports_nothing_above_it():
    for path in (PACKAGE / "retrieval").glob("*.py"):
        assert _imports(path) <= {"errors", "devices", "retrieval", *(p.stem for p in (PACKAGE / "retrieval").glob("*.py"))}, path


def test_only_the_methods_package_names_a_method():
    from instance_search import methods

    pattern = re.compile("[\"'](" + "|".join(methods.names()) + ")[\"']")
    assert pattern.search('"gem"') and pattern.search("'xfeat'")
    for path in sorted(PACKAGE.rglob("*.py")):
        if "methods" in path.relative_to(PACKAGE).parts:
            continue
        # features/xfeat.py names its network (the package's model, xfeat.extract.network), not the method
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("NETWORK = ")]
        assert not pattern.search("\n".join(lines)), path


def test_each_formula_is_written_once():
    """The weighted cosine's denominator, L2 normalisation and the weight check live in one module each."""
    sources = {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}
    weighted = [p for p, s in sources.items() if re.search(r"alpha \* \w+\.sum\(axis=1\)|alpha \* d_norm2", s)]
    assert [p.name for p in weighted] == ["similarity.py"], weighted
    norms = [p for p, s in sources.items() if "np.linalg.norm(x, axis=" in s]
    assert [p.name for p in norms] == ["linalg.py"], norms
    checks = [p for p, s in sources.items() if re.search(r"not 0 <= alpha <= 1|alpha >= 0", s)]
    assert [p.name for p in checks] == ["similarity.py"], checks


def test_every_registered_method_implements_the_interface():
    from instance_search import methods
    from instance_search.methods.base import Method

    members = [n for n in vars(Method) if not n.startswith("_")] + list(Method.__annotations__)
    for name in methods.names():
        m = methods.get(name)
        missing = [n for n in members if not hasattr(m, n)]
        assert not missing and m.name == name, (name, missing)
