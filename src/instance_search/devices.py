"""Which device a step wants, decided without loading anything heavy (the workflow asks at parse time)."""

from __future__ import annotations


def runs_on_gpu(device: str) -> bool:
    """Whether a step with this ``codebook.device`` wants a GPU (what a workflow reserves for it). Unlike
    :func:`resolve_device`, cuda is not checked here: a cluster's head node may have no GPU itself."""
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device == "cuda"
