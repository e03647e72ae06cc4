"""Generate the embedded benchmark (Oxford format) from params.yaml: datasets.<dataset>.generator."""

from instance_search import runner
from instance_search.datasets import synthetic
from instance_search.errors import InstanceSearchError


def main(args, params):
    generator = params["datasets"].get(args.dataset, {}).get("generator")
    if generator is None:
        raise InstanceSearchError(f"{args.params}: key datasets.{args.dataset}.generator not found; add it")
    synthetic.generate(args.out, seed=params["seed"], **generator)


if __name__ == "__main__":
    p = runner.parser(__doc__)
    p.add_argument("--dataset", default="synthetic", help="the datasets.<name> entry whose generator to use")
    p.add_argument("--out", required=True, help="output folder (replaced atomically): jpg/, gt/, README.txt")
    runner.run(p, main, __file__)
