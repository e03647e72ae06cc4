"""Draw the first queries of a dataset and their top re-ranked results (green/red/grey frames)."""

from instance_search import runner
from instance_search.report import write_figure


def main(args, params):
    fig = params["figures"]
    write_figure(args.gnd, args.rerank, args.out, n_queries=int(fig["queries"]), top=int(fig["top"]))
    runner.log.info("figure -> %s", args.out)


if __name__ == "__main__":
    p = runner.parser(__doc__)
    p.add_argument("--gnd", required=True, help="results/<dataset>/gnd.json")
    p.add_argument("--rerank", required=True, help="re-ranked rerank.npz (with boxes)")
    p.add_argument("--out", required=True, help="output: PNG")
    runner.run(p, main, __file__)
