"""Re-rank each query's top results by their best sliding window over the assignment maps."""

from instance_search import runner, stages

p = runner.parser(__doc__)
p.add_argument("--method", required=True)
p.add_argument("--similarity", required=True, choices=["cosine", "weighted_cosine"])
p.add_argument("--gnd", required=True)
p.add_argument("--bow", required=True)
p.add_argument("--assign", required=True)
p.add_argument("--rank", required=True, help="first-stage ranking (rank step)")
p.add_argument("--out", required=True, help="output: re-ranked ranks, scores and best windows")


def main(args, params):
    stages.rerank(params, args.method, args.similarity, args.gnd, args.bow, args.assign, args.rank, args.out)


if __name__ == "__main__":
    runner.run(p, main, __file__)
