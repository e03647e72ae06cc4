"""The command line of every declared step: ``python workflow/scripts/step.py <step> --params ... --<name> <path>``.

Its arguments come from the step's declaration (:mod:`.declare`); the frame (logging, params,
signals, one-line errors) is :func:`.runner.run`. After the step, the modules it loaded while it ran
are compared with the code its declaration names (:mod:`.code`): a module outside it is logged as a
warning, since its DVC stage would not re-run when that module changes.
"""

from __future__ import annotations

import logging
import sys

from .. import methods
from . import code, runner
from .steps import STEPS

log = logging.getLogger("instance_search")


def _ours() -> set[str]:
    return {m for m in sys.modules if m == code.PACKAGE or m.startswith(code.PACKAGE + ".")}


def _check_code(step, args, before: set[str]) -> None:
    method = getattr(args, "method", None)
    # a search step reads its method from the index: any method's code is its own then
    declared = set().union(*(code.step_modules(step, m) for m in ([method] if method or not step.method_code
                                                                   else methods.names())))
    outside = sorted(m for m in _ours() - before - declared if code.module_file(m))
    if outside:
        log.warning("step %s loaded modules its declared code does not name: %s (a change to them would not "
                    "re-run its DVC stage; declare method_code or import them)", step.name, ", ".join(outside))


def main(script_file: str, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STEPS:
        lines = [f"  {name:14s} {s.doc}" for name, s in sorted(STEPS.items())]
        head = "usage: step.py <step> --params params.yaml [--<input|output|wildcard> VALUE ...] [--log FILE]"
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: no step named {argv[0]!r}; the steps:", *lines, sep="\n", file=sys.stderr)
            sys.exit(2)
        print(head, "", "steps (step.py <step> --help for its arguments):", *lines, sep="\n")
        return
    s = STEPS[argv[0]]
    p = runner.parser(s.doc)
    p.prog = f"step.py {s.name}"
    s.add_arguments(p)

    def run(args, params) -> None:
        before = _ours()
        s.call(params, args)
        _check_code(s, args, before)

    runner.run(p, run, script_file, argv[1:], outputs=lambda args: [getattr(args, o) for o in s.outputs],
               compute=s.compute)
