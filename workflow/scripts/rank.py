"""First-stage ranking of the whole database for every query of the ground truth."""

from instance_search import runner, steps
from instance_search.retrieval.similarity import SIMILARITIES

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--similarity", required=True, choices=SIMILARITIES)
p.add_argument("--gnd", required=True, help="normalised ground truth (the queries)")
p.add_argument("--index", required=True, help="index folder (encode step)")
p.add_argument("--rank", required=True, help="output: ranks and scores")


def main(args, params):
    steps.rank(params, args.similarity, args.gnd, args.index, args.rank)


if __name__ == "__main__":
    runner.run(p, main, __file__, compute=True)
