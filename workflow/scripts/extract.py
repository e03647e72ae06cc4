"""Extract local features (with positions) of every image of a dataset into a sharded store."""

from instance_search import runner, steps

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--data", required=True, help="the dataset's fetch manifest (the images are listed in --gnd)")
p.add_argument("--gnd", required=True, help="normalised ground truth (prepare step)")
p.add_argument("--features", required=True, help="output: feature store folder")


def main(args, params):
    steps.extract(params, args.method, args.gnd, args.features)


if __name__ == "__main__":
    runner.run(p, main, __file__, compute=True)
