"""Step declarations (instance_search.pipeline): the signature check, the command line made from a
declaration, and the code a step depends on, from the import graph."""

from __future__ import annotations

import subprocess
import sys

import pytest

from instance_search.pipeline import code, declare
from instance_search.pipeline.steps import STEPS

REPO = code.ROOT.parent.parent


def test_a_declaration_must_match_its_function():
    with pytest.raises(TypeError, match="differ from the declared"):
        @declare.step(inputs={"gnd": "x"}, outputs={"out": "y"})
        def wrong(params, gnd, other):  # pragma: no cover - never registered
            pass
    assert "wrong" not in STEPS


def test_arguments_follow_the_declaration():
    s = STEPS["rank"]
    values = {"dataset": "d", "method": "sift", "similarity": "cosine", "gnd": "g.json", "index": "ix",
              "rank": "r.npz", "data": "unused"}
    # only what the function takes: rank reads its method from the index, not a --method
    assert s.arguments(values) == ["--similarity", "cosine", "--gnd", "g.json", "--index", "ix", "--rank", "r.npz"]
    with pytest.raises(KeyError, match="index"):
        s.arguments({k: v for k, v in values.items() if k != "index"})
    # an optional input left out (a step that does not gather part jobs)
    e = STEPS["extract"]
    assert "--parts" not in e.arguments({"dataset": "d", "method": "sift", "gnd": "g", "features": "f"})


def test_every_step_has_a_command_line_with_its_arguments():
    proc = subprocess.run([sys.executable, "workflow/scripts/step.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and all(f"  {name} " in proc.stdout for name in STEPS), proc.stdout
    proc = subprocess.run([sys.executable, "workflow/scripts/step.py", "rerank", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for option in ("--params", "--similarity", "--gnd", "--index", "--rank", "--rerank", "--log"):
        assert option in proc.stdout, option
    assert "--method" not in proc.stdout and "--dataset" not in proc.stdout
    proc = subprocess.run([sys.executable, "workflow/scripts/step.py", "nosuch"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no step named 'nosuch'")


def test_imports_resolve_relative_and_absolute_forms():
    got = code.imports("instance_search.pipeline.search")
    assert {"instance_search.engine", "instance_search.index", "instance_search.retrieval.ranking",
            "instance_search.retrieval", "instance_search"} <= got
    # from .. import evaluate: a submodule named in a from-import counts
    assert "instance_search.evaluate" in got


def test_a_step_depends_on_its_methods_code_only():
    sift = set(code.step_files(STEPS["extract"], "sift"))
    assert "src/instance_search/methods/local_features.py" in sift
    assert not {"src/instance_search/methods/bow.py", "src/instance_search/retrieval/verification.py",
                "src/instance_search/methods/global_features.py"} & sift
    assert "src/instance_search/features/cnn.py" not in sift  # blcf's extraction is its own module
    # blcf's indexing reads its features through its extraction's reader: both are its code
    assert "src/instance_search/methods/cnn_features.py" in code.step_files(STEPS["codebook"], "blcf")
    codebook = set(code.step_files(STEPS["codebook"], "sift"))
    assert "src/instance_search/methods/bow_index.py" in codebook
    assert not {"src/instance_search/methods/bow.py", "src/instance_search/retrieval/verification.py"} & codebook
    gem = set(code.step_files(STEPS["rerank"], "gem"))
    assert "src/instance_search/retrieval/diffusion.py" in gem
    assert "src/instance_search/retrieval/verification.py" not in gem
    assert "src/instance_search/retrieval/verification.py" in code.step_files(STEPS["rerank"], "sift")
    with pytest.raises(ValueError, match="name the method"):
        code.step_files(STEPS["rank"])
