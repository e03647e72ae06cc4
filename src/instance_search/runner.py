"""The shared frame of every workflow script: arguments, logging, params, one-line errors.

A script builds an ``argparse`` parser with :func:`parser`, then hands its ``main(args, params)``
to :func:`run`. Failures the user can fix (:class:`InstanceSearchError`) print one line
``error: <message>`` on stderr and exit with status 1; the log file gets the same line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from .config import load_params
from .errors import InstanceSearchError

log = logging.getLogger("instance_search")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="the parameter file (validated against the schema)")
    p.add_argument("--schema", default=None, help="JSON schema of the parameters (default: workflow/schemas/params.schema.json)")
    p.add_argument("--log", default=None, help="also write the log to this file")
    return p


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.ERROR:
            return f"error: {record.getMessage()}"
        return f"{record.name}: {record.getMessage()}"


def _setup_logging(log_file: str | None) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(_ConsoleFormatter())
    root.addHandler(stderr)
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="w", encoding="utf-8")
        fh.setFormatter(fmt)
        root.addHandler(fh)


def default_schema(script_file: str) -> Path:
    """workflow/scripts/x.py -> workflow/schemas/params.schema.json"""
    return Path(script_file).resolve().parent.parent / "schemas" / "params.schema.json"


def run(p: argparse.ArgumentParser, main: Callable[[argparse.Namespace, dict], None],
        script_file: str, argv: list[str] | None = None) -> None:
    args = p.parse_args(argv)
    _setup_logging(args.log)
    try:
        params = load_params(args.params, args.schema or default_schema(script_file))
        main(args, params)
    except InstanceSearchError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.error(msg)  # stderr shows "error: <msg>"; the log file keeps it with a timestamp
        sys.exit(1)
