"""Shared fixtures: paths of the repository and of the real-photo test data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
UKBENCH = SHARED_DATA / "ukbench-500"


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def params() -> dict:
    import yaml

    return yaml.safe_load((REPO / "params.yaml").read_text())
