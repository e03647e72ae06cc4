"""The conda environment (envs/instance-search.yaml) and pyproject.toml name the same packages with
the same version ranges, so `snakemake --sdm conda` runs the code that `pip install -e .` runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
ENV_FILE = REPO / "envs" / "instance-search.yaml"

# PyPI name -> conda(-forge / bioconda) name, where they differ.
CONDA_NAME = {
    "torch": "pytorch",
    "opencv-python-headless": "py-opencv",
    "matplotlib": "matplotlib-base",  # matplotlib without a GUI toolkit
    "snakemake": "snakemake-minimal",  # snakemake's core, without the report/remote extras
}
# In the environment only: the interpreter and the installer that the post-deploy script uses.
ENV_ONLY = {"python", "pip"}

_SPEC = re.compile(r"^(?:[\w.-]+::)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)\s*(?P<version>.*)$")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _pyproject_requirements() -> dict[str, Requirement]:
    """[project] dependencies and [build-system] requires, keyed by their conda name."""
    data = _pyproject()
    reqs = [Requirement(r) for r in data["project"]["dependencies"] + data["build-system"]["requires"]]
    out: dict[str, Requirement] = {}
    for req in reqs:
        name = canonicalize_name(req.name)
        out[CONDA_NAME.get(name, name)] = req
    return out


def _env() -> dict:
    return yaml.safe_load(ENV_FILE.read_text(encoding="utf-8"))


def _env_specs() -> dict[str, str]:
    """conda package name -> its version constraint ('' when none)."""
    specs: dict[str, str] = {}
    for entry in _env()["dependencies"]:
        assert isinstance(entry, str), (
            f"{ENV_FILE.name}: {entry!r}: keep every package a conda package (no pip: section), "
            "so that the solver sees them all"
        )
        m = _SPEC.match(entry.strip())
        assert m, f"{ENV_FILE.name}: cannot read the package spec {entry!r}"
        name = m["name"].lower()
        assert name not in specs, f"{ENV_FILE.name}: {name} is listed twice"
        specs[name] = m["version"].replace(" ", "")
    return specs


def test_env_file_uses_conda_forge():
    env = _env()
    assert env["channels"][0] == "conda-forge", "conda-forge must be the first (highest priority) channel"
    assert "defaults" not in env["channels"]


def test_same_packages_as_pyproject():
    env = set(_env_specs())
    project = set(_pyproject_requirements()) | ENV_ONLY
    assert env - project == set(), f"in {ENV_FILE.name} but not in pyproject.toml: {sorted(env - project)}"
    assert project - env == set(), f"in pyproject.toml but not in {ENV_FILE.name}: {sorted(project - env)}"


@pytest.mark.parametrize("conda_name", sorted(_pyproject_requirements()))
def test_same_version_range_as_pyproject(conda_name):
    req = _pyproject_requirements()[conda_name]
    spec = _env_specs().get(conda_name)
    assert spec is not None, f"{conda_name} is missing from {ENV_FILE.name}"
    # conda's ">=a,<b" reads as a PEP 440 specifier set; compare the sets of clauses.
    assert SpecifierSet(spec) == req.specifier, (
        f"{conda_name}: {ENV_FILE.name} says {spec!r}, pyproject.toml says {str(req.specifier)!r}"
    )


def test_python_version_is_allowed_by_pyproject():
    spec = _env_specs()["python"]
    m = re.fullmatch(r"=?=?(\d+\.\d+)(?:\.\*)?", spec)
    assert m, f"pin python to one minor version in {ENV_FILE.name} (python=3.X), not {spec!r}"
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert requires.contains(f"{m[1]}.0"), f"python {m[1]} is outside requires-python {requires}"


def test_post_deploy_installs_the_project_without_dependencies():
    """Snakemake runs <env>.post-deploy.sh after creating the env; it must not pull pip deps."""
    script = ENV_FILE.with_name(ENV_FILE.stem + ".post-deploy.sh")
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!"), "the post-deploy script needs a shebang (Snakemake reads it)"
    assert re.search(r"pip install\b.*--no-deps\b.*(--editable|-e)\s+\.(\s|$)", text), (
        "the post-deploy script should install the checkout with pip --no-deps -e ."
    )


def test_every_rule_uses_this_environment():
    rules_dir = REPO / "workflow" / "rules"
    for smk in sorted(rules_dir.glob("*.smk")):
        text = smk.read_text(encoding="utf-8")
        n_rules = len(re.findall(r"^rule \w+:", text, flags=re.M))
        envs = re.findall(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", text, flags=re.M)
        assert len(envs) == n_rules, f"{smk.name}: every rule needs a conda: directive"
        for env in envs:
            assert (smk.parent / env).resolve() == ENV_FILE, f"{smk.name}: conda: {env} is not {ENV_FILE}"
