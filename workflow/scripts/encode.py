"""Encode every image with the method's model into an index folder (files plus a manifest of fingerprints)."""

from instance_search import runner, steps

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--gnd", required=True, help="normalised ground truth")
p.add_argument("--features", required=True, help="feature store folder (extract step)")
p.add_argument("--model", required=True, help="model.npz (codebook step)")
p.add_argument("--index", required=True, help="output: index folder")


def main(args, params):
    steps.encode(params, args.method, args.gnd, args.features, args.model, args.index)


if __name__ == "__main__":
    runner.run(p, main, __file__, compute=True)
