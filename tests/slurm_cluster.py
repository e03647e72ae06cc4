"""A one-node Slurm on this machine for the cluster tests (Debian's slurm-wlm and munge, as the Snakemake
project tests its Slurm plugin): ``start()`` brings it up, ``stop()`` takes down what ``start`` started.

The node is the machine itself (``slurmd -C``: its CPUs and memory) with two GPUs that are not there
(``gres.conf``: /dev/null and /dev/zero), so that a job asking for ``--gpus=1`` (the CNN extractions'
``gpu=1``) is scheduled as on a GPU node, two at a time, and runs on the CPU here. No accounting: job states come from ``squeue``,
and finished jobs stay listed a day (``MinJobAge``). The configuration goes where every Slurm command
looks, /etc/slurm/slurm.conf (the executor plugin drops SLURM_* variables inside jobs, so SLURM_CONF
would not reach them); a configuration this module did not write is never touched: the cluster tests
then skip and say so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

CONF = Path("/etc/slurm/slurm.conf")
GRES = CONF.with_name("gres.conf")
FAKE_GPUS = ("/dev/null", "/dev/zero")  # device files that are always there: the node's two "cards"
GPUS = len(FAKE_GPUS)  # part jobs of a CNN extraction run two at a time
MARK = "# written by instance-search tests/slurm_cluster.py (removed when the tests end)"
STATE = Path("/var/tmp/instance-search-slurm")
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
INSTALL = "make test installs them as root with apt-get (slurm-wlm, munge)"

_started: list[str] = []


def _run(*args: str, timeout: float = 30, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["runuser", "-u", user, "--", *args] if user else list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _config(node: str) -> str:
    return "\n".join([
        MARK,
        "ClusterName=instance-search-test",
        f"SlurmctldHost={node.split()[0].removeprefix('NodeName=')}",
        "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
        "GresTypes=gpu", "MinJobAge=86400", "ReturnToService=2", "DefMemPerCPU=1000",
        f"StateSaveLocation={STATE}/state", f"SlurmdSpoolDir={STATE}/spool",
        f"SlurmctldPidFile={STATE}/slurmctld.pid", f"SlurmdPidFile={STATE}/slurmd.pid",
        f"SlurmctldLogFile={STATE}/slurmctld.log", f"SlurmdLogFile={STATE}/slurmd.log",
        f"{node} Gres=gpu:{GPUS} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _munge() -> str | None:
    if _run("munge", "-n").returncode == 0:
        return None
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        return f"{key} is missing (reinstall munge)"
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    proc = _run("/usr/sbin/munged", user="munge")
    if proc.returncode != 0:
        return f"munged did not start: {(proc.stderr or proc.stdout).strip()[-300:]}"
    _started.append("munged")
    return None


def _idle(timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _run("sinfo", "--noheader", "--format=%t").stdout.strip()
        if state == "idle":
            return True
        if state.startswith(("drain", "inval", "down")):
            _run("scontrol", "update", "nodename=ALL", "state=resume")
        time.sleep(1)
    return False


def start() -> str | None:
    """Bring the one-node cluster up (or find the one an earlier start left); None when jobs can be
    submitted, else why not (the caller skips with it)."""
    missing = [t for t in TOOLS if not shutil.which(t) and not Path("/usr/sbin", t).is_file()]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing): {INSTALL}"
    if os.geteuid() != 0:
        return "bringing up a Slurm node needs root (slurmd runs jobs as their users)"
    if CONF.exists() and MARK not in CONF.read_text(encoding="utf-8", errors="replace"):
        return f"{CONF} exists and is not this test's: a real Slurm configuration is not touched"
    reason = _munge()
    if reason:
        return reason
    node = _run("/usr/sbin/slurmd", "-C").stdout.splitlines()
    if not node or not node[0].startswith("NodeName="):
        return "slurmd -C did not describe this machine"
    running = CONF.exists() and _run("scontrol", "ping").stdout.count("UP") > 0
    if not running:
        shutil.rmtree(STATE, ignore_errors=True)  # no jobs of an earlier run
    for d in ("state", "spool"):
        (STATE / d).mkdir(parents=True, exist_ok=True)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(_config(node[0].split(" UpTime=")[0]), encoding="utf-8")
    GRES.write_text(f"{MARK}\nAutoDetect=off\n" + "".join(f"Name=gpu File={f}\n" for f in FAKE_GPUS),
                    encoding="utf-8")
    if not running:
        for daemon in ("slurmctld", "slurmd"):
            proc = _run(f"/usr/sbin/{daemon}")
            if proc.returncode != 0:
                return f"{daemon} did not start: {(proc.stderr or proc.stdout).strip()[-300:]}"
            _started.append(daemon)
    if not _idle():
        log = (STATE / "slurmctld.log")
        tail = log.read_text(errors="replace").splitlines()[-3:] if log.is_file() else []
        return f"the Slurm node did not become idle within 60 s: {' | '.join(tail)}"
    return None


def stop() -> None:
    """Stop the daemons ``start`` started and remove the configuration it wrote."""
    if "slurmctld" in _started:
        _run("scontrol", "shutdown")  # slurmctld and slurmd
    if "munged" in _started:
        _run("pkill", "-x", "munged")
    for f in (CONF, GRES):
        if f.is_file() and MARK in f.read_text(encoding="utf-8", errors="replace"):
            f.unlink()
    _started.clear()


def jobs() -> list[tuple[int, str, str]]:
    """(job id, state, the TRES it asked for beyond CPUs and memory, e.g. gres:gpu:1 or N/A) of every
    job the node still lists."""
    out = _run("squeue", "--states=all", "--noheader", "--Format=JobID:24,State:24,tres-per-job:120").stdout
    return [(int(i), state, tres) for i, state, tres in (line.split() for line in out.splitlines() if line.strip())]
