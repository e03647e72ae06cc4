"""Evaluate the first-stage, re-ranked and expanded rankings of one dataset x method x similarity."""

from instance_search import runner
from instance_search.evaluate import write_evaluation


def _labels(params, method):
    """What the metrics must say beside the numbers: frcnn's proposal source (grid or rpn)."""
    return {"proposals": params[method]["extract"]["source"]} if method == "frcnn" else {}


def main(args, params):
    summary = write_evaluation(args.gnd, {"first_stage": args.rank, "rerank": args.rerank, "expand": args.expand},
                               args.metrics, args.per_query, params, args.dataset, args.method, args.similarity,
                               pr_path=args.pr, labels=_labels(params, args.method))
    runner.log.info("%s/%s/%s: mAP %.4f first stage, %.4f re-ranked, %.4f expanded", args.dataset, args.method,
                    args.similarity, summary["first_stage"]["mAP"], summary["rerank"]["mAP"], summary["expand"]["mAP"])


if __name__ == "__main__":
    p = runner.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--similarity", required=True)
    p.add_argument("--gnd", required=True, help="results/<dataset>/gnd.json")
    p.add_argument("--rank", required=True, help="first-stage rank.npz")
    p.add_argument("--rerank", required=True, help="re-ranked rerank.npz")
    p.add_argument("--expand", required=True, help="query-expanded expand.npz")
    p.add_argument("--metrics", required=True, help="output: mean metrics JSON (dvc metrics)")
    p.add_argument("--per-query", required=True, help="output: per-query metrics CSV")
    p.add_argument("--pr", required=True, help="output: interpolated precision-recall curves CSV (dvc plots)")
    runner.run(p, main, __file__)
