"""Make the pretrained weights one method's extraction loads present in torchvision's cache, checked.

Found there, or downloaded (weights.mirrors first, then torchvision's address) and checked against
the sha256 prefix in its name and against the lock file; offline and missing, one line says which
file goes where. Frozen lock (fetch.frozen in params.yaml, or INSTANCE_SEARCH_FROZEN_LOCK=1 as in
CI): a file the lock has no sha256 for is refused instead of recorded.
"""

from instance_search import runner
from instance_search.download import lock_frozen
from instance_search.weights import fetch_weights

LOCK = "workflow/weights.lock.json"  # the checked-in sha256 lock file (relative to the repository root)


def main(args, params):
    fetch_weights(params, args.method, args.manifest, LOCK, frozen=lock_frozen(params))


if __name__ == "__main__":
    p = runner.parser(__doc__)
    p.add_argument("--method", required=True, help="a method of run.methods")
    p.add_argument("--manifest", required=True, help="output: results/weights/<method>.json, the files and their sha256 "
                                                     "(rewritten only when they change)")
    runner.run(p, main, __file__)
