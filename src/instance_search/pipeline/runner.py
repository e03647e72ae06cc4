"""The shared frame of every workflow script: arguments, logging, params, one-line errors.

The step's command line (:mod:`.command`) builds an ``argparse`` parser with :func:`parser`, then
hands its ``main(args, params)`` to :func:`run`, with the step's outputs. Failures the user can fix
(:class:`InstanceSearchError`) print one line ``error: <message>`` on stderr and exit with status
1; the log file gets the same line.

Interruptions. SIGTERM (a cluster's or Snakemake's kill) and SIGINT (Ctrl-C) become an orderly
exit: the temporaries of the step's atomic writes are removed (:func:`io.remove_temporaries`), the
unwinding removes the rest (unpacking folders, unfinished outputs), one line ``error: interrupted
by SIGTERM ...`` is printed and the status is 128 + the signal number. Earlier outputs are kept.
When a step starts, stale temporaries of its outputs (those a killed run left) are swept.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from .. import io, threads, versions
from ..config import load_params
from ..errors import InstanceSearchError

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


class Interrupted(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT; a BaseException, so no ``except Exception`` eats it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# pid: the process that installed the handler (forked workers inherit it); signum: the first signal
# received; handled: run() has caught the Interrupted (later signals are then ignored).
_state: dict = {"pid": None, "signum": None, "handled": False}
REDELIVER_S = 0.5


def _in_finalizer(frame) -> bool:
    """Python prints and drops an exception raised in ``__del__``: the signal must wait for a safe point."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _redeliver(signum: int) -> None:
    """Send the signal again until run() has handled it: an Interrupted raised where Python swallows
    exceptions (finalizers, weakref callbacks) must not let the step carry on."""
    def loop() -> None:
        while not _state["handled"]:
            time.sleep(REDELIVER_S)
            if not _state["handled"] and _state["pid"] == os.getpid():
                os.kill(os.getpid(), signum)

    threading.Thread(target=loop, name="instance-search-signal", daemon=True).start()


def _on_signal(signum: int, frame) -> None:
    if os.getpid() != _state["pid"]:  # a forked worker (DataLoader): die as it would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _state["handled"]:  # already cleaning up: a second signal must not cut that short
        return
    if _state["signum"] is None:
        _state["signum"] = signum
        io.remove_temporaries()
        _redeliver(signum)
    if _in_finalizer(frame):
        return  # sent again in REDELIVER_S
    raise Interrupted(_state["signum"])


def run(p: argparse.ArgumentParser, main: Callable[[argparse.Namespace, dict], None],
        script_file: str, argv: list[str] | None = None, *,
        outputs: Callable[[argparse.Namespace], Iterable[str | Path]] | None = None, compute: bool = False) -> None:
    """Parse the arguments, set up logging and signals, load the params and call ``main(args, params)``.
    ``compute``: the step is a compute step and runs on ``compute.threads`` threads; others on one."""
    args = p.parse_args(argv)
    _setup_logging(args.log)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        _state.update(pid=os.getpid(), signum=None, handled=False)
        handlers = {s: signal.signal(s, _on_signal) for s in _SIGNALS}
    try:
        for out in (outputs(args) if outputs else ()):
            for stale in io.sweep_temporaries(out):
                log.info("%s: removed a temporary file left by an interrupted run", stale)
        params = load_params(args.params, args.schema or default_schema(script_file))
        n = threads.apply(params["compute"]["threads"] if compute else 1)
        main(args, params)
        # after main, so that a failure prints its one line alone
        log.info("%d CPU thread(s)%s; in use at the end: %s", n, " (compute.threads)" if compute else "",
                 threads.in_use())
        log.info("versions: %s", versions.line())  # what decided the bytes written, besides code and params
    except InstanceSearchError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.error(msg)  # stderr shows "error: <msg>"; the log file keeps it with a timestamp
        sys.exit(1)
    except Interrupted as exc:
        _state["handled"] = True
        io.remove_temporaries()
        name = signal.Signals(exc.signum).name
        log.error(f"interrupted by {name}; the step's temporary files were removed and earlier results "
                  f"kept; re-run the step")
        sys.exit(128 + exc.signum)
    finally:
        _state["handled"] = True  # stops a redelivery thread
        for s, h in handlers.items():
            signal.signal(s, h)
