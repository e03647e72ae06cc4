"""First-stage ranking of the database for every query (sparse inverted-index products)."""

from instance_search import runner, stages

p = runner.parser(__doc__)
p.add_argument("--method", required=True)
p.add_argument("--similarity", required=True, choices=["cosine", "weighted_cosine"])
p.add_argument("--gnd", required=True)
p.add_argument("--bow", required=True)
p.add_argument("--assign", required=True)
p.add_argument("--out", required=True, help="output: ranks and scores")


def main(args, params):
    stages.rank(params, args.method, args.similarity, args.gnd, args.bow, args.assign, args.out)


if __name__ == "__main__":
    runner.run(p, main, __file__)
