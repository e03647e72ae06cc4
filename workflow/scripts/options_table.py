"""Write the second-stage options table of one similarity (rows: datasets x methods x metrics), Markdown and CSV."""

from pathlib import Path

from instance_search import runner
from instance_search.report import write_options_table

p = runner.parser(__doc__)
p.add_argument("--similarity", required=True)
p.add_argument("--options", required=True, help="folder of <dataset>-<method>.json files (options step)")
p.add_argument("--md", required=True, help="output: Markdown table")
p.add_argument("--csv", required=True, help="output: CSV table")


def main(args, params):
    paths = [Path(args.options) / f"{d}-{m}.json" for d in params["run"]["datasets"] for m in params["run"]["methods"]]
    table = write_options_table(paths, args.similarity, args.md, args.csv)
    runner.log.info("options table %s: %d rows -> %s", args.similarity, len(table), args.md)


if __name__ == "__main__":
    runner.run(p, main, __file__)
