"""The results: metrics of every ranking (evaluate), the tables, and the figures."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import methods
from ..evaluate import write_evaluation
from ..report import write_figure, write_options_table, write_pr_figure, write_table
from .declare import PathLike, step

log = logging.getLogger(__name__)


@step(inputs={"gnd": "results/<dataset>/gnd.json", "rank": "first-stage rank.npz", "rerank": "re-ranked rerank.npz",
              "expand": "query-expanded expand.npz"},
      outputs={"metrics": "mean metrics JSON (dvc metrics)", "per_query": "per-query metrics CSV",
               "pr": "interpolated precision-recall curves CSV (dvc plots)"},
      wildcards=("dataset", "method", "similarity"), params=("evaluate",), method_code="family")
def evaluate(params: dict, dataset: str, method: str, similarity: str, gnd: PathLike, rank: PathLike,
             rerank: PathLike, expand: PathLike, metrics: PathLike, per_query: PathLike, pr: PathLike) -> None:
    """Evaluate the first-stage, re-ranked and expanded rankings of one dataset x method x similarity."""
    summary = write_evaluation(gnd, {"first_stage": rank, "rerank": rerank, "expand": expand}, metrics, per_query,
                               params, dataset, method, similarity, pr_path=pr,
                               labels=methods.get(method).labels(params[method], dataset))
    if summary.get("evaluated") is not False:
        log.info("%s/%s/%s: mAP %.4f first stage, %.4f re-ranked, %.4f expanded", dataset, method, similarity,
                 summary["first_stage"]["mAP"], summary["rerank"]["mAP"], summary["expand"]["mAP"])


@step(inputs={"metrics": "folder of <dataset>.json metrics files (evaluate step)"},
      outputs={"md": "Markdown table", "csv": "CSV table"}, wildcards=("method", "similarity"),
      params=("run.datasets",))
def tables(params: dict, method: str, similarity: str, metrics: PathLike, md: PathLike, csv: PathLike) -> None:
    """One method x similarity table (rows: the datasets of run.datasets) in the seed's layout."""
    files = [Path(metrics) / f"{d}.json" for d in params["run"]["datasets"]]
    write_table(files, method, similarity, md, csv, published=methods.published(method))
    log.info("table %s/%s: %d datasets -> %s", method, similarity, len(files), md)


@step(inputs={"options": "folder of <dataset>-<method>.json files (options step)"},
      outputs={"md": "Markdown table", "csv": "CSV table"}, wildcards=("similarity",),
      params=("run.datasets", "run.methods"))
def options_table(params: dict, similarity: str, options: PathLike, md: PathLike, csv: PathLike) -> None:
    """The second-stage options table of one similarity (rows: datasets x methods x metrics)."""
    files = [Path(options) / f"{d}-{m}.json" for d in params["run"]["datasets"] for m in params["run"]["methods"]]
    table = write_options_table(files, similarity, md, csv)
    log.info("options table %s: %d rows -> %s", similarity, len(table), md)


@step(inputs={"gnd": "results/<dataset>/gnd.json", "rerank": "re-ranked rerank.npz (with best regions)"},
      outputs={"png": "PNG"}, params=("figures",))
def figures(params: dict, gnd: PathLike, rerank: PathLike, png: PathLike) -> None:
    """The first queries of a dataset and their top re-ranked results (green/red/grey frames)."""
    fig = params["figures"]
    write_figure(gnd, rerank, png, n_queries=int(fig["queries"]), results=int(fig["results"]))
    log.info("figure -> %s", png)


@step(inputs={"pr": "the evaluate step's precision-recall CSV"}, outputs={"png": "PNG"},
      wildcards=("dataset", "method", "similarity"))
def pr_figure(params: dict, dataset: str, method: str, similarity: str, pr: PathLike, png: PathLike) -> None:
    """The precision-recall curves of a dataset's three rankings (first stage, re-ranked, expanded)."""
    write_pr_figure(pr, png, f"{dataset}, {method}, {similarity}: precision-recall")
    log.info("precision-recall figure -> %s", png)
