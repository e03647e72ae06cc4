"""Make one dataset's raw files present under data/<dataset>/: generated, downloaded or local, checked.

Frozen lock (fetch.frozen in params.yaml, or INSTANCE_SEARCH_FROZEN_LOCK=1 as in CI): anything the
lock file has no sha256 for is refused instead of recorded.
"""

from pathlib import Path

from instance_search import runner
from instance_search.datasets.fetch import fetch
from instance_search.download import lock_frozen

LOCK = "workflow/datasets.lock.json"  # the checked-in sha256 lock file (relative to the repository root)


def main(args, params):
    if args.dataset not in params["datasets"]:
        raise runner.InstanceSearchError(f"{args.params}: key datasets.{args.dataset} not found; define it there")
    data = Path(args.manifest).parent.parent  # data/<dataset>/manifest.json: the folder of every dataset
    fetch(params, args.dataset, data, LOCK, frozen=lock_frozen(params))


if __name__ == "__main__":
    p = runner.parser(__doc__)
    p.add_argument("--dataset", required=True, help="a datasets.<name> entry of params.yaml")
    p.add_argument("--manifest", required=True, help="output: data/<dataset>/manifest.json, rewritten only when the "
                                                     "files on disk changed")
    runner.run(p, main, __file__)
