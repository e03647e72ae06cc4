"""instance_search: instance image retrieval (SIFT / CNN bags of words, Faster R-CNN features).

The library knows nothing of Snakemake or DVC: the workflow scripts parse arguments and call it.
The query API (:mod:`instance_search.api`: ``open_index``, ``SearchIndex``, ``Answer``, ``Hit``,
``load_params``, ``read_queries``) is importable from here; it is loaded on first use, so
``import instance_search`` stays cheap (no numpy, OpenCV or torch).
"""

import importlib

from . import kernels

kernels.pin()  # before any module of the package loads cv2, faiss or torch

__version__ = "0.1.0"

_API = ("Answer", "Hit", "Query", "SearchIndex", "load_params", "open_index", "read_queries")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        # by name, not an import statement: the workflow's stages depend on the modules their code imports
        # (pipeline/code.py reads import statements), and every one imports this package
        api = importlib.import_module(f"{__name__}.api")
        return getattr(api, name)
    raise AttributeError(f"module 'instance_search' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
