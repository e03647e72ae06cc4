"""Encode every image with the method's model into an index folder (files plus a manifest of fingerprints)."""

from instance_search import runner, steps

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--gnd", required=True, help="normalised ground truth")
p.add_argument("--features", required=True, help="feature store folder (extract step)")
p.add_argument("--model", required=True, help="model.npz (codebook step)")
p.add_argument("--index", required=True, help="output: index folder (or part folder)")
p.add_argument("--part", type=int, help="encode only this part (0-based) of --of (a Snakemake encode_part job)")
p.add_argument("--of", type=int, help="the number of parts (compute.parts)")
p.add_argument("--parts", help="gather the index from the part folders in this folder instead of encoding")


def main(args, params):
    if args.parts:
        steps.gather_index(params, args.dataset, args.method, args.gnd, args.features, args.model, args.parts,
                           args.index)
    else:
        steps.encode(params, args.method, args.gnd, args.features, args.model, args.index,
                     None if args.part is None else (args.part, args.of))


if __name__ == "__main__":
    runner.run(p, main, __file__, compute=True)
