"""The ``instance-search`` command: ``index`` a folder of photos, ``query`` an index with an image and a
box, or ``serve`` a local web page over indexes.

Failures the user can fix print one line ``error: <message>`` on stderr and exit with status 1
(argparse's own usage errors exit with 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import InstanceSearchError
from .retrieval.similarity import SIMILARITIES


def _parser() -> argparse.ArgumentParser:
    from . import methods

    ap = argparse.ArgumentParser(prog="instance-search", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True, metavar="{index,query,serve}")

    x = sub.add_parser("index", help="index a folder of photos (or add photos to an index)",
                       description="Build an index of a folder of images with the pipeline's own steps (extract, "
                                   "learn the model, encode), or add the images of another folder to an index "
                                   "without learning its model again.")
    what = x.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", help="the folder of images to index (searched recursively)")
    what.add_argument("--add", metavar="DIR", help="a folder of images to add to the existing index --out")
    x.add_argument("--method", choices=methods.names(), help="the method (with --images)")
    x.add_argument("--out", required=True, help="the index folder to write (with --images it must not exist)")
    x.add_argument("--params", default="params.yaml", help="the method's parameters (default params.yaml)")

    q = sub.add_parser("query", help="rank an index's images for an image and box, or a CSV file of them",
                       description="Rank the database of an index for an image (and a box in its pixels), or for "
                                   "each query of a CSV file in one process (the index and network loaded once).")
    q.add_argument("--index", required=True, help="an index folder: results/<dataset>/<method>, or one made by index")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="the query image (any file OpenCV reads)")
    what.add_argument("--queries", metavar="CSV",
                      help="a CSV file with the header image,x1,y1,x2,y2: one query a row, the image relative to "
                           "the CSV's folder, the box empty for the whole image; every row is checked first")
    q.add_argument("--box", default=None, help="x1,y1,x2,y2 in the image's pixels (default: the whole image)")
    q.add_argument("--similarity", choices=SIMILARITIES, default="cosine")
    q.add_argument("--results", type=int, default=20, help="results to show (default 20)")
    q.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=True,
                   help="re-score the top candidates locally and expand the query, as params say (default: on)")
    q.add_argument("--out", default=None, help="write a montage (.png/.jpg): the query box and each result's region")
    q.add_argument("--json", action="store_true", help="print the answer as JSON (with --queries: one line a query)")
    q.add_argument("--params", default="params.yaml", help="search and re-ranking parameters (default params.yaml)")

    s = sub.add_parser("serve", help="a local web page to query one or more indexes",
                       description="Serve a local web page (127.0.0.1 only) to query one or more indexes.")
    s.add_argument("--index", action="append", required=True, help="an index folder; repeat for several")
    s.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free port)")
    s.add_argument("--params", default="params.yaml", help="search and re-ranking parameters (default params.yaml)")
    s.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload (default 20 MB)")
    return ap


def _params(path: str) -> dict:
    from .config import load_params, schema_path

    return load_params(path, schema_path(path))


def _index(args: argparse.Namespace) -> None:
    from . import methods, photos, threads

    params = _params(args.params)
    threads.apply(params["compute"]["threads"])  # the pipeline's compute steps, run here: the same threads
    if args.images is not None:
        if args.method is None:
            raise InstanceSearchError(f"index --images needs --method ({', '.join(methods.names())})")
        photos.build(args.images, args.method, args.out, params)
    else:
        if args.method is not None:
            raise InstanceSearchError("index --add keeps the index's own method; drop --method")
        photos.add(args.add, args.out, params)


def _query(args: argparse.Namespace) -> None:
    from .api import open_index, read_queries
    from .query import format_text, parse_box, write_montage

    if args.results < 1:
        raise InstanceSearchError(f"--results {args.results}: must be at least 1")
    if args.queries is not None:
        if args.box is not None or args.out is not None:
            raise InstanceSearchError("--box and --out go with --image; with --queries each row of the CSV has its box")
        queries = read_queries(args.queries)  # every row checked before the (slower) index load
    else:
        box = parse_box(args.box) if args.box is not None else None
    index = open_index(args.index, args.params)
    options = dict(results=args.results, similarity=args.similarity, rerank=args.rerank)
    if args.queries is None:
        answer = index.query(args.image, box, **options)
        if args.out:
            write_montage(answer, args.out)
        print(json.dumps(answer.to_dict(), indent=1) if args.json else format_text(answer))
        if args.out and not args.json:
            print(f"montage: {args.out}")
        return
    from tqdm import tqdm

    with tqdm(queries, desc="queries", unit="query", file=sys.stderr) as bar:
        for q in bar:
            try:
                answer = index.query(q.image, q.box, **options)
            except InstanceSearchError as exc:  # the answers before it are printed already
                raise InstanceSearchError(f"{args.queries}: line {q.row}: {exc}") from None
            bar.write(json.dumps(answer.to_dict()) if args.json else format_text(answer) + "\n", file=sys.stdout)
            sys.stdout.flush()  # each answer as it comes, also into a pipe


def _serve(args: argparse.Namespace) -> None:
    from .index import load_index
    from .web.app import serve

    if not 0 <= args.port <= 65535:
        raise InstanceSearchError(f"--port {args.port}: expected 0..65535")
    if args.max_upload_mb <= 0:
        raise InstanceSearchError(f"--max-upload-mb {args.max_upload_mb}: must be positive")
    params = _params(args.params)
    indexes = [load_index(p) for p in args.index]
    serve(indexes, port=args.port, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), params=params,
          params_source=args.params)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        {"index": _index, "query": _query, "serve": _serve}[args.command](args)
    except InstanceSearchError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
