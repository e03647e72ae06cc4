"""instance_search: instance image retrieval (SIFT / CNN bags of words, Faster R-CNN features).

The library knows nothing of Snakemake or DVC: the workflow scripts parse arguments and call it.
"""

__version__ = "0.1.0"
