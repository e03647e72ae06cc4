"""The conda environment (envs/instance-search.yaml) installs what `make install` installs: conda gives
Python and pip, its post-deploy script requirements.lock and the checkout, so that `snakemake --sdm
conda` runs the bytes of the venv."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parent.parent
ENV_FILE = REPO / "envs" / "instance-search.yaml"
POST_DEPLOY = ENV_FILE.with_name(ENV_FILE.stem + ".post-deploy.sh")


def _env() -> dict:
    return yaml.safe_load(ENV_FILE.read_text(encoding="utf-8"))


def test_env_file_uses_conda_forge():
    env = _env()
    assert env["channels"][0] == "conda-forge", "conda-forge must be the first (highest priority) channel"
    assert "defaults" not in env["channels"]


def test_conda_gives_only_python_and_pip():
    """Any other conda package would be another build than the lock's (other bytes)."""
    names = sorted(re.match(r"[A-Za-z0-9_.-]+", entry)[0] for entry in _env()["dependencies"])
    assert names == ["pip", "python"], f"{ENV_FILE.name}: only python and pip; the rest is requirements.lock"


def test_python_version_is_allowed_by_pyproject():
    spec = next(e for e in _env()["dependencies"] if e.startswith("python"))
    m = re.fullmatch(r"python=?=?(\d+\.\d+)(?:\.\*)?", spec)
    assert m, f"pin python to one minor version in {ENV_FILE.name} (python=3.X), not {spec!r}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert SpecifierSet(project["requires-python"]).contains(f"{m[1]}.0")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert f"--python-version {m[1]}" in makefile, "the lock is resolved for another Python than conda installs"


def test_post_deploy_installs_the_lock_then_the_project():
    """Snakemake runs <env>.post-deploy.sh after creating the env: the lock as make install does it."""
    text = POST_DEPLOY.read_text(encoding="utf-8")
    assert text.startswith("#!"), "the post-deploy script needs a shebang (Snakemake reads it)"
    assert re.search(r"pip install --no-deps --require-hashes -r requirements\.lock", text)
    assert re.search(r"pip install\b.*--no-deps\b.*(--editable|-e)\s+\.(\s|$)", text)
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "pip install --quiet --no-deps --require-hashes -r requirements.lock" in makefile


def test_every_rule_uses_this_environment():
    rules_dir = REPO / "workflow" / "rules"
    for smk in sorted(rules_dir.glob("*.smk")):
        text = smk.read_text(encoding="utf-8")
        n_rules = len(re.findall(r"^rule \w+:", text, flags=re.M))
        envs = re.findall(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", text, flags=re.M)
        assert len(envs) == n_rules, f"{smk.name}: every rule needs a conda: directive"
        for env in envs:
            assert (smk.parent / env).resolve() == ENV_FILE, f"{smk.name}: conda: {env} is not {ENV_FILE}"
