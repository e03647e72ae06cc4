"""Loading and validating params.yaml against its JSON schema.

A violation becomes one line naming the key path (``sift.codebook.words``) and the problem.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import InstanceSearchError


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate_params(params: Any, schema: dict, source: str = "params.yaml") -> None:
    """Raise InstanceSearchError for the first schema violation (deepest, most specific one)."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise InstanceSearchError(
            f"{source}: key {_key_path(best)}: {best.message}; fix the value (see the comments in params.yaml)"
        )


def load_schema(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_params(path: str | os.PathLike, schema_path: str | os.PathLike) -> dict:
    """Read a params file and validate it; every script calls this before doing any work."""
    path = Path(path)
    if not path.is_file():
        raise InstanceSearchError(f"{path}: parameter file not found")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InstanceSearchError(f"{path}: not valid YAML{where}; fix the syntax") from None
    validate_params(params, load_schema(schema_path), source=str(path))
    return params


def schema_path(params_path: str | os.PathLike) -> Path:
    """The schema for a params file: its checkout's (beside it), else this installation's checkout's."""
    for root in (Path(params_path).resolve().parent, Path(__file__).resolve().parents[2]):
        schema = root / "workflow" / "schemas" / "params.schema.json"
        if schema.is_file():
            return schema
    raise InstanceSearchError(f"{params_path}: no workflow/schemas/params.schema.json beside it to check it against; "
                              "pass the params.yaml of an instance-search checkout")
