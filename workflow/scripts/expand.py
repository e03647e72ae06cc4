"""Query expansion (off, GQE or LQE) over the top of each query's re-ranked list."""

from instance_search import runner, stages

p = runner.parser(__doc__)
p.add_argument("--method", required=True)
p.add_argument("--similarity", required=True, choices=["cosine", "weighted_cosine"])
p.add_argument("--gnd", required=True)
p.add_argument("--bow", required=True)
p.add_argument("--assign", required=True)
p.add_argument("--rerank", required=True, help="re-ranked list with best windows (rerank step)")
p.add_argument("--out", required=True, help="output: the expanded queries' ranks and scores")


def main(args, params):
    stages.expand(params, args.method, args.similarity, args.gnd, args.bow, args.assign, args.rerank, args.out)


if __name__ == "__main__":
    runner.run(p, main, __file__)
