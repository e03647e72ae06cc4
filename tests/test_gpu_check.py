"""The GPU check's dry run: the script a CUDA machine runs (benchmarks/gpu_check.py) still runs, on the
CPU at toy sizes, and prints its one table, so it is ready the day a GPU is lent."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "ukbench-500" / "jpg"


@pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"{PHOTOS} missing: the check times extraction on those photos")
def test_gpu_check_dry_run_prints_its_table():
    got = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry", "--images", "2"], cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    table = [line for line in got.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| check | ok | result | seconds |"
    rows = {line.split(" | ")[0][2:]: line for line in table[1:]}
    assert list(rows) == ["CUDA agreement tests", "codebook_device.py", *(f"extract {m} (params-full)"
                                                                         for m in ("blcf", "frcnn", "gem", "xfeat"))]
    assert all(" | yes | " in line for line in rows.values()), table
    assert "2 tests collected" in rows["CUDA agreement tests"]  # both agreement tests still exist
    assert "images/s over 2 photos" in rows["extract gem (params-full)"]
    assert "(dry)" in got.stdout
