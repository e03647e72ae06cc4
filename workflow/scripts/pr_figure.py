"""Plot the precision-recall curves of a dataset's three rankings (first stage, re-ranked, expanded)."""

from instance_search import runner
from instance_search.report import write_pr_figure

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--similarity", required=True)
p.add_argument("--pr", required=True, help="the evaluate step's precision-recall CSV")
p.add_argument("--png", required=True, help="output: PNG")


def main(args, params):
    write_pr_figure(args.pr, args.png, f"{args.dataset}, {args.method}, {args.similarity}: precision-recall")
    runner.log.info("precision-recall figure -> %s", args.png)


if __name__ == "__main__":
    runner.run(p, main, __file__)
