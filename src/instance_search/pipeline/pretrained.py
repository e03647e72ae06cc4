"""The pretrained weights a method's extraction loads (the weights step)."""

from __future__ import annotations

from ..download import lock_frozen
from ..weights import fetch_weights
from .declare import PathLike, step

# the checked-in sha256 lock file (relative to the repository root, where every step runs)
WEIGHTS_LOCK = "workflow/weights.lock.json"


@step(inputs={}, outputs={"manifest": "results/weights/<method>.json, the files and their sha256 (rewritten "
                                      "only when they change)"},
      wildcards=("method",), params=("{method}.extract",))
def weights(params: dict, method: str, manifest: PathLike) -> None:
    """Make the pretrained weights one method's extraction loads present in torchvision's cache, checked.

    Found there, or downloaded (weights.mirrors first, then torchvision's address) and checked against
    the sha256 prefix in its name and against the lock file; offline and missing, one line says which
    file goes where."""
    fetch_weights(params, method, manifest, WEIGHTS_LOCK, frozen=lock_frozen(params))
