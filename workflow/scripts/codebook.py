"""Learn a method's model on the database features: visual words (k-means, optional PCA-whitening) or a whitening."""

from instance_search import runner, steps

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--gnd", required=True, help="normalised ground truth (which images form the database)")
p.add_argument("--features", required=True, help="feature store folder (extract step)")
p.add_argument("--model", required=True, help="output: model.npz")


def main(args, params):
    steps.learn(params, args.method, args.gnd, args.features, args.model)


if __name__ == "__main__":
    runner.run(p, main, __file__, compute=True)
