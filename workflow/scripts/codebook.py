"""Learn the visual vocabulary by k-means on a seeded sample of database descriptors."""

from instance_search import runner, stages

p = runner.parser(__doc__)
p.add_argument("--method", required=True)
p.add_argument("--features", required=True, help="feature store folder (extract step)")
p.add_argument("--gnd", required=True, help="normalised ground truth (which images are the database)")
p.add_argument("--out", required=True, help="codebook .npy/.npz file")


def main(args, params):
    stages.train_codebook(params, args.method, args.features, args.gnd, args.out)


if __name__ == "__main__":
    runner.run(p, main, __file__)
