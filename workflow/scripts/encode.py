"""Assign features to words: the BoW matrix with word weights, and the per-image assignment maps."""

from instance_search import runner, stages

p = runner.parser(__doc__)
p.add_argument("--method", required=True)
p.add_argument("--gnd", required=True)
p.add_argument("--features", required=True)
p.add_argument("--codebook", required=True)
p.add_argument("--bow", required=True, help="output: BoW counts and word weights")
p.add_argument("--assign", required=True, help="output: assignment maps (positions and words)")


def main(args, params):
    stages.encode(params, args.method, args.gnd, args.features, args.codebook, args.bow, args.assign)


if __name__ == "__main__":
    runner.run(p, main, __file__)
