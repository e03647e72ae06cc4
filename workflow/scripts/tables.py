"""Write one method x similarity table (rows = datasets of run.datasets) in the seed's layout, Markdown and CSV."""

from pathlib import Path

from instance_search import methods, runner
from instance_search.report import write_table

p = runner.parser(__doc__)
p.add_argument("--method", required=True)
p.add_argument("--similarity", required=True)
p.add_argument("--metrics", required=True, help="folder of <dataset>.json metrics files (evaluate step)")
p.add_argument("--md", required=True, help="output: Markdown table")
p.add_argument("--csv", required=True, help="output: CSV table")


def main(args, params):
    metrics = [Path(args.metrics) / f"{d}.json" for d in params["run"]["datasets"]]
    write_table(metrics, args.method, args.similarity, args.md, args.csv, published=methods.get(args.method).published)
    runner.log.info("table %s/%s: %d datasets -> %s", args.method, args.similarity, len(metrics), args.md)


if __name__ == "__main__":
    runner.run(p, main, __file__)
