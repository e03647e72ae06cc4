"""Draw the first queries of a dataset and their top re-ranked results (green/red/grey frames)."""

from instance_search import runner
from instance_search.report import write_figure

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--similarity", required=True)
p.add_argument("--data", required=True, help="the dataset's fetch manifest (the images are listed in --gnd)")
p.add_argument("--gnd", required=True, help="results/<dataset>/gnd.json")
p.add_argument("--rerank", required=True, help="re-ranked rerank.npz (with best regions)")
p.add_argument("--png", required=True, help="output: PNG")


def main(args, params):
    fig = params["figures"]
    write_figure(args.gnd, args.rerank, args.png, n_queries=int(fig["queries"]), results=int(fig["results"]))
    runner.log.info("figure -> %s", args.png)


if __name__ == "__main__":
    runner.run(p, main, __file__)
