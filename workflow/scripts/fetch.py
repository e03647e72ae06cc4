"""Make one dataset's raw files present under data/<dataset>/: generated, downloaded or local, checked."""

from instance_search import runner
from instance_search.datasets.fetch import fetch


def main(args, params):
    if args.dataset not in params["datasets"]:
        raise runner.InstanceSearchError(f"{args.params}: key datasets.{args.dataset} not found; define it there")
    fetch(params, args.dataset, args.data, args.lock)


if __name__ == "__main__":
    p = runner.parser(__doc__)
    p.add_argument("--dataset", required=True, help="a datasets.<name> entry of params.yaml")
    p.add_argument("--data", default="data", help="the folder holding one sub-folder per dataset")
    p.add_argument("--lock", default="workflow/datasets.lock.json",
                   help="the checked-in sha256 lock file (a file's first use records it)")
    runner.run(p, main, __file__)
