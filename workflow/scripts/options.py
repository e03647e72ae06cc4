"""Every second-stage option of a method (re-rankings, an expansion) from the first stage, evaluated side by side."""

from instance_search import runner, steps
from instance_search.retrieval.similarity import SIMILARITIES

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--similarity", required=True, choices=SIMILARITIES)
p.add_argument("--gnd", required=True, help="normalised ground truth (the queries)")
p.add_argument("--index", required=True, help="index folder (encode step)")
p.add_argument("--rank", required=True, help="first-stage ranking (rank step)")
p.add_argument("--options", required=True, help="output: each option's mean metrics (JSON)")


def main(args, params):
    steps.options(params, args.similarity, args.gnd, args.index, args.rank, args.options)


if __name__ == "__main__":
    runner.run(p, main, __file__, compute=True)
