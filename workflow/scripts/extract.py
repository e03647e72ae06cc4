"""Extract local features (with positions) of every image of a dataset into a sharded store."""

from instance_search import runner, stages

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--gnd", required=True, help="normalised ground truth (prepare step)")
p.add_argument("--out", required=True, help="feature store folder")


def main(args, params):
    stages.extract(params, args.method, args.gnd, args.out)


if __name__ == "__main__":
    runner.run(p, main, __file__)
