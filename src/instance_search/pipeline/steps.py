"""Every declared step, by name (:data:`STEPS`), and their functions for calling from Python."""

from __future__ import annotations

from .build import codebook, encode, encode_part, extract, extract_part
from .data import fetch, prepare
from .pretrained import weights
from .declare import STEPS, Step
from .results import evaluate, figures, options_table, pr_figure, tables
from .search import expand, options, rank, rerank

__all__ = ["STEPS", "Step", "codebook", "encode", "encode_part", "evaluate", "expand", "extract", "extract_part",
           "fetch", "figures", "options", "options_table", "pr_figure", "prepare", "rank", "rerank", "tables",
           "weights"]
