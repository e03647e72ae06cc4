"""Query expansion over the re-ranked top; the candidates are re-scored locally with the expanded queries."""

from instance_search import runner, steps
from instance_search.retrieval.similarity import SIMILARITIES

p = runner.parser(__doc__)
p.add_argument("--dataset", required=True)
p.add_argument("--method", required=True)
p.add_argument("--similarity", required=True, choices=SIMILARITIES)
p.add_argument("--gnd", required=True, help="normalised ground truth (the queries)")
p.add_argument("--index", required=True, help="index folder (encode step)")
p.add_argument("--rerank", required=True, help="re-ranked ranking (rerank step)")
p.add_argument("--expand", required=True, help="output: the expanded queries' ranking")


def main(args, params):
    steps.expand(params, args.similarity, args.gnd, args.index, args.rerank, args.expand)


if __name__ == "__main__":
    runner.run(p, main, __file__, compute=True)
