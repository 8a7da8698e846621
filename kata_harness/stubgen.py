"""Turn a reference solution into the learner's stub: same docstrings and signatures, bodies that raise.

Rules, applied to `solutions/kNN_*.py`:

- module docstring, imports and other module-level statements stay as they are;
- every function and method keeps its decorators, signature and docstring; its body becomes
  ``raise NotImplementedError``;
- a class keeps its docstring and its non-function statements; its methods follow the rule above;
- functions and methods whose name starts with one underscore (not dunders) are solution-only helpers
  and are left out;
- a ``def`` or ``class`` whose first line ends with ``# stub: keep`` is scaffolding the learner is given,
  and stays whole.

A bug hunt's learner file is no stub: it is the whole program with every planted bug put back
(``kata_harness.mutants.shipped_source``).

Usage: ``python -m kata_harness.stubgen (--check | --out DIR) [KATA ...]``.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from kata_harness.catalog import FOLLOW_UPS_HEADING, GIVEN_MARKER, UnknownKata, find_kata, read_kata
from kata_harness.mutants import shipped_source
from kata_harness.source import REPO_ROOT
from kata_harness.workflow import BACKUPS

KEEP_MARKER = GIVEN_MARKER
STUB_BODY = "raise NotImplementedError  # TODO: replace this line with your implementation"
SOLUTIONS = REPO_ROOT / "solutions"
KATAS = REPO_ROOT / "katas"

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _edits(
    tree: ast.Module, lines: list[str], only: Collection[str] | None = None
) -> list[tuple[int, int, list[str]]]:
    """(first, last, replacement) line spans, 1-based and inclusive, in source order."""
    edits: list[tuple[int, int, list[str]]] = []

    def visit(body: list[ast.stmt], top: bool = False) -> None:
        for node in body:
            if not isinstance(node, FunctionNode | ast.ClassDef):
                continue
            if top and only is not None and node.name not in only:
                continue  # left whole: the reference's own code, helpers included
            if lines[node.lineno - 1].rstrip().endswith(KEEP_MARKER):
                continue
            if _is_private(node.name):
                edits.append((_first_line(node), node.end_lineno or node.lineno, []))
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            else:
                edits.append(_stub_body(node, lines))

    visit(tree.body, top=True)
    return edits


def _stub_body(node: FunctionNode, lines: list[str]) -> tuple[int, int, list[str]]:
    first = node.body[0]
    is_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    # Replace everything after the docstring (comments included) up to the end of the function.
    start = (first.end_lineno or first.lineno) + 1 if is_docstring else _first_line(first)
    end = node.end_lineno or node.lineno
    return start, max(end, start - 1), [" " * first.col_offset + STUB_BODY]


def make_stub(solution_source: str, only: Collection[str] | None = None) -> str:
    """The stub text for one solution file's text; with `only`, just those top-level tasks are stubbed and
    everything else stays the reference's (a drill's or a mock interview's scratch copy)."""
    lines = solution_source.splitlines()
    tree = ast.parse(solution_source)
    for first, last, replacement in reversed(_edits(tree, lines, only)):
        lines[first - 1 : last] = replacement
    text = "\n".join(lines).rstrip("\n") + "\n"
    while "\n\n\n\n" in text:  # a removed helper leaves its blank lines behind
        text = text.replace("\n\n\n\n", "\n\n\n")
    return text


def learner_start(solution: Path) -> str:
    """What a learner starts from for this solution file: its stub, or for a bug hunt the broken program."""
    text = solution.read_text(encoding="utf-8")
    kata = read_kata(solution)
    if not kata.bug_hunt:
        return make_stub(text)
    return _follow_ups_held_back(shipped_source(kata, text), kata.number)


def _follow_ups_held_back(text: str, number: int) -> str:
    """A bug hunt's follow-up questions name the kinds of bug it plants: its shipped file says where to
    find them once every bug is fixed (`nox -s explain` asks them, with the answers), not what they are."""
    start = text.find(f"\n{FOLLOW_UPS_HEADING}\n")
    if start < 0:
        return text
    end = text.find("\n\n", text.find("\n- ", start))
    held_back = (
        f"\n{FOLLOW_UPS_HEADING}: held back, as an interviewer would. Once every bug is fixed,\n"
        f"`nox -s explain -- {number}` asks them, with model answers."
    )
    return text[:start] + held_back + text[end:]


def solution_files(names: list[str] | None = None) -> list[Path]:
    """The solution files for the given kata names or numbers, or all of them."""
    if names:
        return [find_kata(name).solution for name in names]
    return sorted(SOLUTIONS.glob("k[0-9][0-9]_*.py"))


def backup_path(name: str, now: datetime | None = None) -> Path:
    """A new file in .katas-backup/ named after the kata and the time, never one that exists already."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    path = BACKUPS / f"{name}-{stamp}.py"
    count = 1
    while path.exists():  # two writes within a second keep both backups
        count += 1
        path = BACKUPS / f"{name}-{stamp}-{count}.py"
    return path


def write_stub(solution: Path, target: Path) -> Path | None:
    """Write `solution`'s stub to `target`. A file already there that holds anything else is copied to
    .katas-backup/ first: nothing a learner wrote is ever lost. Returns that backup, if one was made."""
    stub = learner_start(solution)
    backup = None
    if target.exists() and target.read_bytes() != stub.encode("utf-8"):
        backup = backup_path(solution.stem)
        backup.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, backup)  # first the copy; only a finished copy lets the stub overwrite anything
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(stub, encoding="utf-8")
    return backup


def write_stubs(out_dir: Path, names: list[str] | None = None) -> list[tuple[Path, Path | None]]:
    """Write the stub for each solution into `out_dir`; returns (path written, backup made) pairs."""
    return [
        (out_dir / solution.name, write_stub(solution, out_dir / solution.name))
        for solution in solution_files(names)
    ]


def stale_stubs(stub_dir: Path = KATAS) -> list[str]:
    """Names of stubs in `stub_dir` that are missing or differ from what their solution generates."""
    stale = []
    for solution in solution_files():
        stub = stub_dir / solution.name
        expected = learner_start(solution)
        if not stub.exists() or stub.read_text(encoding="utf-8") != expected:
            stale.append(solution.stem)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("katas", nargs="*", help="kata numbers or names (default: all)")
    parser.add_argument("--check", action="store_true", help="fail if a committed stub is out of date")
    parser.add_argument("--out", type=Path, help="folder to write into (files that differ are backed up)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_stubs(args.out or KATAS)
        for name in stale:
            print(f"katas/{name}.py differs from its solution's generated stub: run `nox -s stubs`")
        return 1 if stale else 0
    if args.out is None:
        parser.error("say where to write: --out katas (maintainers) or --out SOME_DIR")
    try:
        written = write_stubs(args.out, args.katas)
    except UnknownKata as error:
        parser.error(str(error))
    for path, backup in written:
        print(f"wrote {path}" + (f" (its previous content is in {backup})" if backup else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
