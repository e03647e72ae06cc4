"""Write a dataset's normalised ground truth (gnd.json) with the adapter of its format."""

from instance_search import runner
from instance_search.datasets.prepare import prepare


def main(args, params):
    prepare(params, args.dataset, args.gnd)


if __name__ == "__main__":
    p = runner.parser(__doc__)
    p.add_argument("--dataset", required=True, help="a key of datasets: in params.yaml")
    p.add_argument("--data", required=True, help="the dataset's fetch manifest (data/<dataset>/manifest.json)")
    p.add_argument("--gnd", required=True, help="output: the gnd.json to write (atomically)")
    runner.run(p, main, __file__)
