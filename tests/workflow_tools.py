"""Helpers shared by the workflow tests (test_workflow_definitions.py, test_workflow_run.py): a
temporary copy of the repository, and Snakemake, DVC and git run in it as subprocesses.

A plain module, not a test file: the tests import it as `workflow_tools`, which works because
pytest puts the tests folder on sys.path (the default `prepend` import mode).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COPIED = ["Snakefile", "workflow", "profiles", "src", "envs", "params.yaml", "params-full.yaml", "dvc.yaml", ".dvcignore",
          ".gitignore", "pyproject.toml"]
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", ".snakemake", ".pytest_cache")
CODEBOOK_SIZE = "sift.codebook.words"  # the params.yaml key of the number of visual words
TIMEOUT = 120  # seconds a tool may run, unless a caller says otherwise


def copy_repo(dest: Path) -> Path:
    """Copy what the two tools read (COPIED, without caches) into `dest`, created if need be."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=IGNORED)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def copy_dvc_state(dest: Path) -> None:
    """What a clone of this repository holds for DVC besides dvc.yaml: its config and the committed
    dvc.lock (not the local cache)."""
    shutil.copytree(REPO / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    shutil.copy2(REPO / "dvc.lock", dest / "dvc.lock")


def tool_env(root: Path) -> dict[str, str]:
    """The environment for snakemake/dvc in the copy `root`: the steps' `python` is this
    interpreter, and it imports the copy's own src/instance_search."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "src"), env.get("PYTHONPATH")]))
    return env


def run(args: list[str], cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=tool_env(cwd), capture_output=True, text=True, timeout=timeout)


def snakemake(*args: str, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "snakemake", *args], cwd, timeout)


def dvc(*args: str, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, timeout)


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """git with a fixed identity and default branch; raises if it fails."""
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main",
         *args], cwd=cwd, capture_output=True, text=True, check=True)


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def tail(proc: subprocess.CompletedProcess, n: int = 6000) -> str:
    return output_of(proc)[-n:]


def get_key(params: dict, dotted: str):
    """The value of a dotted params.yaml key, e.g. get_key(params, "sift.codebook.words")."""
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node


def set_key(params: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    get_key(params, ".".join(parents))[last] = value
