"""Extract local features (with positions) of every image of a dataset into a sharded store."""

from instance_search import runner, steps

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--data", required=True, help="the dataset's fetch manifest (the images are listed in --gnd)")
p.add_argument("--gnd", required=True, help="normalised ground truth (prepare step)")
p.add_argument("--weights", help="the weights step's manifest: the pretrained files are in torchvision's cache "
                                 "(an ordering input; the extraction checks the files itself)")
p.add_argument("--features", required=True, help="output: feature store folder (or part folder)")
p.add_argument("--part", type=int, help="extract only this part (0-based) of --of (a Snakemake extract_part job)")
p.add_argument("--of", type=int, help="the number of parts (compute.parts)")
p.add_argument("--parts", help="gather the features from the part folders in this folder instead of extracting")


def main(args, params):
    if args.parts:
        steps.gather_features(params, args.dataset, args.method, args.gnd, args.parts, args.features)
    else:
        steps.extract(params, args.method, args.gnd, args.features, None if args.part is None else (args.part, args.of))


if __name__ == "__main__":
    runner.run(p, main, __file__, compute=True)
