"""Evaluate the first-stage, re-ranked and expanded rankings of one dataset x method x similarity."""

from instance_search import methods, runner
from instance_search.evaluate import write_evaluation

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


def main(args, params):
    summary = write_evaluation(args.gnd, {"first_stage": args.rank, "rerank": args.rerank, "expand": args.expand},
                               args.metrics, args.per_query, params, args.dataset, args.method, args.similarity,
                               pr_path=args.pr, labels=methods.get(args.method).labels(params[args.method]))
    if summary.get("evaluated") is False:
        return
    runner.log.info("%s/%s/%s: mAP %.4f first stage, %.4f re-ranked, %.4f expanded", args.dataset, args.method,
                    args.similarity, summary["first_stage"]["mAP"], summary["rerank"]["mAP"], summary["expand"]["mAP"])


if __name__ == "__main__":
    runner.run(p, main, __file__)
