"""A pipeline step, declared once beside its function: what it reads, writes and runs on.

    @step(inputs={"gnd": "...", "index": "..."}, outputs={"rank": "..."}, wildcards=("similarity",),
          params=("similarity", "{method}.search"), compute=True, method_code="family")
    def rank(params, similarity, gnd, index, rank): ...

The function takes the validated params, then one argument per wildcard, input and output (the
registration checks that its signature says the same). From the declaration come its command line
(:func:`command.main`), its Snakemake rule's arguments, threads, GPUs and tracked params
(``workflow/rules/common.smk``), and its DVC stage's code dependencies (:mod:`.code`). The rule
keeps only the wiring: the paths of the named inputs and outputs.
"""

from __future__ import annotations

import argparse
import inspect
import os
from dataclasses import dataclass, field
from typing import Callable

STEPS: dict[str, "Step"] = {}

# wildcards that are numbers (a part job's part i of n); the others are names
NUMBERS = {"part", "of"}
Resource = Callable[[dict, dict], int]  # (params, wildcards) -> a count
PathLike = str | os.PathLike


@dataclass(frozen=True)
class Step:
    name: str
    function: Callable
    inputs: dict[str, str]        # argument -> what it is (the --help text)
    outputs: dict[str, str]       # written atomically; a killed run's temporaries are swept at the start
    wildcards: tuple[str, ...] = ()   # the rule's wildcards the function takes
    params: tuple[str, ...] = ()      # the params keys it reads ("{method}.search"): a change re-runs it
    compute: bool = False             # runs on compute.threads (else one thread)
    gpu: Resource | None = None       # the GPUs it declares (resources: gpu=...)
    gathers: Callable[[dict, dict], bool] | None = None  # it only gathers part jobs' folders: 1 thread, no GPU
    method_code: str | None = None    # the method's code it runs: "extraction", "indexing" or "family" (methods.module)
    optional: frozenset[str] = field(default_factory=frozenset)  # inputs that may be absent

    @property
    def module(self) -> str:
        return self.function.__module__

    @property
    def doc(self) -> str:
        return (inspect.getdoc(self.function) or self.name).splitlines()[0]

    def threads(self, params: dict, wildcards: dict, compute_threads: int) -> int:
        return compute_threads if self.compute and not self._gathering(params, wildcards) else 1

    def gpus(self, params: dict, wildcards: dict) -> int:
        return 0 if self.gpu is None or self._gathering(params, wildcards) else int(self.gpu(params, wildcards))

    def _gathering(self, params: dict, wildcards: dict) -> bool:
        return bool(self.gathers and self.gathers(params, wildcards))

    def tracked(self, wildcards: dict) -> list[str]:
        return [key.format(**wildcards) for key in self.params]

    def arguments(self, values: dict[str, str]) -> list[str]:
        """``--<name> <value>`` for each wildcard, input and output the function takes (``values`` by
        name; an absent optional input is left out). Names with _ become -."""
        out = []
        for name in [*self.wildcards, *self.inputs, *self.outputs]:
            value = values.get(name)
            if value in (None, "") and name in self.optional:
                continue
            if value in (None, ""):
                raise KeyError(f"step {self.name}: no value for {name!r}")
            out += [f"--{name.replace('_', '-')}", str(value)]
        return out

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        for name in self.wildcards:
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True,
                           type=int if name in NUMBERS else str, help=f"the {name} wildcard")
        for group, what in ((self.inputs, "input"), (self.outputs, "output")):
            for name, text in group.items():
                p.add_argument(f"--{name.replace('_', '-')}", dest=name, required=name not in self.optional,
                               help=f"{what}: {text}")

    def call(self, params: dict, args: argparse.Namespace):
        names = [*self.wildcards, *self.inputs, *self.outputs]
        return self.function(params, **{n: getattr(args, n) for n in names if getattr(args, n) is not None})


def folder_of(paths: list[str]) -> str | None:
    """A list input (one file per dataset, the part jobs' folders) is passed as the folder holding it;
    None for an empty list."""
    folders = {os.path.dirname(p) for p in paths}
    if len(folders) > 1:
        raise ValueError(f"a list input must lie in one folder, got {sorted(folders)}")
    return folders.pop() if folders else None


def step(*, inputs: dict[str, str], outputs: dict[str, str], wildcards: tuple[str, ...] = (),
         params: tuple[str, ...] = (), compute: bool = False, gpu: Resource | None = None,
         gathers: Callable[[dict, dict], bool] | None = None, method_code: str | None = None,
         optional: tuple[str, ...] = ()):
    """Register the decorated function as the step of its name (see the module's docstring)."""

    def register(fn: Callable) -> Callable:
        names = list(inspect.signature(fn).parameters)
        declared = ["params", *wildcards, *inputs, *outputs]
        if sorted(names) != sorted(declared):
            raise TypeError(f"step {fn.__name__}: its parameters {names} differ from the declared {declared}")
        if fn.__name__ in STEPS:
            raise TypeError(f"step {fn.__name__} is declared twice")
        STEPS[fn.__name__] = Step(fn.__name__, fn, dict(inputs), dict(outputs), tuple(wildcards), tuple(params),
                                  compute, gpu, gathers, method_code, frozenset(optional))
        return fn

    return register
