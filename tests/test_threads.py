"""compute.threads: resolved, and applied by a step itself whatever its environment says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import require_weights

from instance_search import threads
from instance_search.errors import InstanceSearchError

REPO = Path(__file__).resolve().parents[1]

# A workflow step in miniature: runner.run with the repository's params file (its compute.threads
# replaced); main builds the CNN as the extract step does and reports what every library uses.
STEP = """
import json, sys
from instance_search import threads
from instance_search.pipeline import runner
p = runner.parser("a step")
def main(args, params):
    from instance_search.features import backbones
    backbones.load("mobilenet_v2")
    print(json.dumps(threads.in_use()))
runner.run(p, main, sys.argv[1], sys.argv[2:], compute=sys.argv[1] == "compute")
"""


def test_resolve():
    assert threads.resolve(3) == 3
    assert threads.resolve("all") == threads.available() >= 1
    for bad in (0, -1, "2", True, 1.5, None):
        with pytest.raises(InstanceSearchError, match="compute.threads"):
            threads.resolve(bad)


@pytest.mark.parametrize("kind, expected", [("compute", 3), ("bookkeeping", 1)])
def test_a_step_applies_its_count_over_the_environment(tmp_path, kind, expected):
    """Snakemake exports OMP_NUM_THREADS=<rule threads scaled to --cores>, DVC nothing: the step's own
    count (compute.threads for compute steps, 1 for the others) wins either way, in every library
    (torch included: it caps OMP_NUM_THREADS at the physical cores, so 3 also checks the explicit call)."""
    require_weights()
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["compute"]["threads"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    schema = REPO / "workflow" / "schemas" / "params.schema.json"
    for env in ({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}, {}):
        environ = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")} | env
        proc = subprocess.run([sys.executable, "-c", STEP, kind, "--params", str(tmp_path / "params.yaml"),
                               "--schema", str(schema)], capture_output=True, text=True, env=environ, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        used = json.loads(proc.stdout.strip().splitlines()[-1])
        assert set(used) >= {"blas", "openmp", "opencv", "faiss", "torch"}, used
        assert set(used.values()) == {expected}, (env, used)
