"""instance_search: instance image retrieval (SIFT / CNN bags of words, Faster R-CNN features).

The library knows nothing of Snakemake or DVC: the workflow scripts parse arguments and call it.
"""

from . import kernels

kernels.pin()  # before any module of the package loads cv2, faiss or torch

__version__ = "0.1.0"
