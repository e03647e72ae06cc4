"""The README stays true: every command in its code blocks exists, it stays short, and every relative
link in it and in docs/ points to a file.

Commands are the lines of the README's fenced ``bash``/``sh``/``console``/plain blocks (in a
``console`` block only the lines after ``$ ``), comments and continuation lines joined, split at
``&&``, ``||``, ``;`` and ``|``. Each is checked by the tool it names:

- ``make X``: X is a target of the Makefile;
- ``snakemake ...`` / ``dvc <sub> ...``: the tool is in the virtualenv and each option is in its
  ``--help`` (for dvc, the subcommand's, e.g. ``dvc exp run --help``);
- ``instance-search <sub> ...``: each option is in ``instance-search <sub> --help``;
- ``python workflow/scripts/step.py <step> ...``: the step is listed and each option is in its ``--help``;
- ``python <file>``: the file exists;
- anything else: its first word is a shell builtin or on PATH.

A line that fits none of these fails with what to change. The ``--help`` outputs are cached.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
BIN = Path(sys.prefix) / "bin"  # the virtualenv the tests run in
STEP_SCRIPT = "workflow/scripts/step.py"
MAX_LINES = 210

BUILTINS = {".", "source", "cd", "export", "unset", "set", "echo", "exit", "true", "false", "test", "[",
            "pwd", "alias", "eval", "exec", "read", "type", "command", "wait", "ulimit", "umask", "trap"}
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
OPERATORS = {"&&", "||", ";", "|", "&"}


# --- reading the README -----------------------------------------------------------------------------

def _blocks(text: str):
    """(language, [(line number, line)]) of every fenced code block."""
    lang, lines = None, []
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if lang is None:
                lang, lines = stripped[3:].strip().lower(), []
            else:
                yield lang, lines
                lang = None
        elif lang is not None:
            lines.append((n, line))


def _commands(text: str) -> list[tuple[int, list[str]]]:
    """(line number, argv) of every command in the shell blocks."""
    found = []
    for lang, lines in _blocks(text):
        if lang not in SHELL_BLOCKS:
            continue
        pending, start = "", 0
        for n, line in lines:
            s = line.strip()
            if lang == "console":
                if not pending:
                    if not s.startswith("$ "):
                        continue  # output
                    s = s[2:]
            elif s.startswith("$ "):
                s = s[2:]
            if not pending and (not s or s.startswith("#")):
                continue
            if not pending:
                start = n
            if s.endswith("\\"):
                pending += s[:-1] + " "
                continue
            whole, pending = pending + s, ""
            lexer = shlex.shlex(whole, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            command: list[str] = []
            for token in lexer:
                if token in OPERATORS:
                    if command:
                        found.append((start, command))
                    command = []
                else:
                    command.append(token)
            if command:
                found.append((start, command))
    return found


def _readme_commands():
    return [pytest.param(argv, id=f"L{n}:{' '.join(argv)[:60]}") for n, argv in _commands(README.read_text("utf-8"))]


# --- what the tools say -----------------------------------------------------------------------------

@functools.cache
def _help(*argv: str) -> str:
    """``argv --help``'s output (stdout and stderr), run from the repository root."""
    exe = BIN / argv[0] if (BIN / argv[0]).exists() else Path(argv[0])
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200"}
    r = subprocess.run([str(exe), *argv[1:], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=env)
    return r.stdout + r.stderr if r.returncode == 0 else ""


@functools.cache
def _make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text("utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9_./$() -]+?)\s*:(?!=)", line)
        if m and not line.startswith("\t"):
            targets.update(m.group(1).split())
        if line.startswith(".PHONY:"):
            targets.update(line.split(":", 1)[1].split())
    return {t for t in targets if not t.startswith(".") and "$" not in t}


def _options(argv: list[str]) -> list[str]:
    """The long and short options a command uses (``--x=1`` -> ``--x``)."""
    return [a.split("=", 1)[0] for a in argv if a.startswith("-") and a not in ("-", "--") and not _number(a)]


def _number(a: str) -> bool:
    return re.fullmatch(r"-\d+(\.\d+)?", a) is not None


def _missing(options: list[str], help_text: str) -> list[str]:
    return [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", help_text)]


def _subcommands(help_text: str) -> set[str]:
    """The subcommands a help text lists: argparse's ``{a,b,c}``, and indented command lines with their
    aliases (``    experiments (exp)``, as dvc lists them)."""
    found = {c for group in re.findall(r"\{([\w,-]+)\}", help_text) for c in group.split(",")}
    for name, alias in re.findall(r"^ {2,}([a-z][\w-]*)(?: \(([\w-]+)\))?(?:\s{2,}|$)", help_text, re.M):
        found.update(n for n in (name, alias) if n)
    return found


# --- the checks -------------------------------------------------------------------------------------

def _check_make(argv):
    targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
    unknown = [t for t in targets if t not in _make_targets()]
    assert not unknown, f"make target(s) {unknown} not in the Makefile (targets: {sorted(_make_targets())})"


def _check_snakemake(argv):
    assert (BIN / "snakemake").exists(), f"snakemake is not installed in {BIN.parent}"
    text = _help("snakemake")
    assert text, "snakemake --help failed"
    missing = _missing(_options(argv), text)
    assert not missing, f"{' '.join(argv)}: option(s) {missing} not in snakemake --help"


def _check_dvc(argv):
    assert (BIN / "dvc").exists(), f"dvc is not installed in {BIN.parent}"
    chain = ["dvc"]
    for word in argv[1:]:
        if word.startswith("-"):
            break
        if word not in _subcommands(_help(*chain)):
            break
        chain.append(word)
    assert len(chain) > 1, f"{' '.join(argv)}: no dvc subcommand (dvc --help lists them)"
    text = _help(*chain)
    assert text, f"{' '.join(chain)} --help failed"
    missing = _missing(_options(argv), text)
    assert not missing, f"{' '.join(argv)}: option(s) {missing} not in {' '.join(chain)} --help"


def _check_instance_search(argv):
    assert len(argv) > 1 and not argv[1].startswith("-"), f"{' '.join(argv)}: name a subcommand"
    subs = _subcommands(_help("instance-search"))
    assert argv[1] in subs, f"{' '.join(argv)}: instance-search has no subcommand {argv[1]!r} (it has {sorted(subs)})"
    missing = _missing(_options(argv[2:]), _help("instance-search", argv[1]))
    assert not missing, f"{' '.join(argv)}: option(s) {missing} not in instance-search {argv[1]} --help"


def _check_step(argv):
    # argv: python workflow/scripts/step.py [<step>] [options]
    python = str(BIN / "python")
    rest = argv[2:]
    if not rest or rest[0].startswith("-"):
        missing = _missing(_options(rest), _help(python, STEP_SCRIPT))
        assert not missing, f"{' '.join(argv)}: option(s) {missing} not in step.py --help"
        return
    listing = _help(python, STEP_SCRIPT)
    steps = set(re.findall(r"^  (\w+) ", listing, re.M))
    assert rest[0] in steps, f"{' '.join(argv)}: no step {rest[0]!r} (step.py --help lists {sorted(steps)})"
    missing = _missing(_options(rest[1:]), _help(python, STEP_SCRIPT, rest[0]))
    assert not missing, f"{' '.join(argv)}: option(s) {missing} not in step.py {rest[0]} --help"


def _check_python(argv):
    files = [a for a in argv[1:] if not a.startswith("-")]
    assert files and argv[1] == files[0], (
        f"{' '.join(argv)}: unknown pattern; the README's python commands run a file (python <file> ...)")
    if files[0] == STEP_SCRIPT:
        return _check_step(argv)
    assert (ROOT / files[0]).is_file(), f"{' '.join(argv)}: {files[0]} does not exist"


def _check_other(argv):
    word = argv[0]
    found = word in BUILTINS or shutil.which(word, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, (f"{' '.join(argv)}: unknown command {word!r}: not a shell builtin and not on PATH; "
                   "fix the README or teach tests/test_readme.py the pattern")


CHECKS = {"make": _check_make, "snakemake": _check_snakemake, "dvc": _check_dvc,
          "instance-search": _check_instance_search, "python": _check_python, "python3": _check_python}


@pytest.mark.parametrize("argv", _readme_commands())
def test_readme_command_exists(argv):
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):  # VAR=value command
        argv = argv[1:]
    assert argv, "an assignment without a command"
    CHECKS.get(argv[0], _check_other)(argv)


def test_readme_has_commands_of_each_kind():
    """The extraction itself works: the README's own commands are found."""
    words = {argv[0] for _, argv in _commands(README.read_text("utf-8"))}
    assert {"make", "instance-search", "snakemake", "dvc", "python"} <= words, words


def test_the_checks_catch_wrong_commands():
    for argv in (["make", "no-such-target"], ["snakemake", "--no-such-option"], ["dvc", "repro", "--no-such"],
                 ["instance-search", "query", "--no-such"], ["instance-search", "nosuch"],
                 ["python", STEP_SCRIPT, "rank", "--no-such"], ["python", STEP_SCRIPT, "nosuch"],
                 ["python", "no/such/file.py"], ["no-such-command-xyz"]):
        with pytest.raises(AssertionError):
            test_readme_command_exists(argv)


def test_console_blocks_and_continuations_are_read():
    text = ("```console\n$ make demo\noutput line\n```\n\n```\n$ snakemake --cores 1 \\\n"
            "    --resources gpu=1   # comment\n# a comment\ncp a b && dvc repro\n```\n\n```python\nx = 1\n```\n")
    assert [argv for _, argv in _commands(text)] == [
        ["make", "demo"], ["snakemake", "--cores", "1", "--resources", "gpu=1"], ["cp", "a", "b"], ["dvc", "repro"]]


def test_readme_is_short():
    n = len(README.read_text("utf-8").splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines (at most {MAX_LINES}): move details into docs/"


# --- links ------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans."""
    text = re.sub(r"^[ \t]*```.*?^[ \t]*```[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    out = set()
    for line in _prose(path.read_text("utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return out


def _raw_anchors(path: Path) -> set[str]:
    """Anchors of headings whose code spans count (GitHub keeps their text)."""
    out = set()
    in_code = False
    for line in path.read_text("utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        m = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).replace("`", "").lower()).replace(" ", "-"))
    return out


MARKDOWN = [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(path):
    broken = []
    for target in LINK.findall(_prose(path.read_text("utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target} (no {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest) | _raw_anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, f"{path.relative_to(ROOT)}: broken relative link(s): {broken}"
