"""The ``instance-search`` command: ``query`` a built index with an image and a box, or ``serve`` a web page.

Failures the user can fix print one line ``error: <message>`` on stderr and exit with status 1
(argparse's own usage errors exit with 2).
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import InstanceSearchError
from .search import SIMILARITIES


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="instance-search", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True, metavar="{query,serve}")

    q = sub.add_parser("query", help="rank a built index's database for one image and box",
                       description="Rank the database of a built index for an image (and a box in its pixels).")
    q.add_argument("--index", required=True, help="a finished index folder, results/<dataset>/<method>")
    q.add_argument("--image", required=True, help="the query image (any file OpenCV reads)")
    q.add_argument("--box", default=None, help="x1,y1,x2,y2 in the image's pixels (default: the whole image)")
    q.add_argument("--similarity", choices=SIMILARITIES, default="cosine")
    q.add_argument("--top", type=int, default=20, help="results to show (default 20)")
    q.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=True,
                   help="re-score the first rerank.top results by their best window (default: on)")
    q.add_argument("--out", default=None, help="write a montage (.png/.jpg): the query box and each result's window")
    q.add_argument("--json", action="store_true", help="print the answer as JSON")
    q.add_argument("--params", default="params.yaml", help="search and rerank parameters (default params.yaml)")

    s = sub.add_parser("serve", help="a local web page to query one or more indexes",
                       description="Serve a local web page (127.0.0.1 only) to query one or more built indexes.")
    s.add_argument("--index", action="append", required=True, help="an index folder; repeat for several")
    s.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free port)")
    s.add_argument("--params", default="params.yaml", help="search and rerank parameters (default params.yaml)")
    s.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload (default 20 MB)")
    return ap


def _query(args: argparse.Namespace) -> None:
    from .index import load_index
    from .query import format_text, parse_box, run_query, write_montage

    box = parse_box(args.box) if args.box is not None else None  # before the (slower) index load
    if args.top < 1:
        raise InstanceSearchError(f"--top {args.top}: must be at least 1")
    index = load_index(args.index, args.params)
    answer = run_query(index, args.image, box, similarity=args.similarity, top=args.top, rerank=args.rerank)
    if args.out:
        write_montage(answer, args.out)
    print(json.dumps(answer.to_dict(), indent=1) if args.json else format_text(answer))
    if args.out and not args.json:
        print(f"montage: {args.out}")


def _serve(args: argparse.Namespace) -> None:
    from .index import load_index
    from .web.app import serve

    if not 0 <= args.port <= 65535:
        raise InstanceSearchError(f"--port {args.port}: expected 0..65535")
    if args.max_upload_mb <= 0:
        raise InstanceSearchError(f"--max-upload-mb {args.max_upload_mb}: must be positive")
    indexes = [load_index(p, args.params) for p in args.index]
    serve(indexes, port=args.port, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        (_query if args.command == "query" else _serve)(args)
    except InstanceSearchError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
