"""Show the learner's kata beside the reference: a unified diff of each function whose code differs.

Usage: ``python -m kata_harness.compare KATA [--peek]`` (``nox -s compare -- 4``). Until the kata passes,
it asks before showing anything (on a terminal), or refuses (elsewhere); ``--peek`` skips both the
grading and the question.
"""

from __future__ import annotations

import ast
import copy
import difflib
import re
import sys
from dataclasses import dataclass

from kata_harness.catalog import KataInfo
from kata_harness.source import display_path
from kata_harness.workflow import (
    OneLineParser,
    SourceUnreadable,
    confirmed,
    fail,
    learner_file,
    missing_message,
    number,
    paint,
    read_source,
    select,
)

_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


@dataclass(frozen=True)
class Function:
    """One function or method: its qualified name, first line (decorators included), source and shape."""

    name: str
    line: int
    source: str
    shape: str  # equal for code that differs only in formatting, comments and the names of local variables


_Def = ast.FunctionDef | ast.AsyncFunctionDef


def _bound_names(body: list[ast.stmt]) -> list[str]:
    """The names the body binds, in the order of their first binding (a walk in source-structure order):
    assignment, for, with-as and comprehension targets, walrus, except-as, nested defs and classes and
    their parameters, lambda parameters - not what a nested class's body binds (its attributes)."""
    found: dict[str, None] = {}

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            found.setdefault(node.id)
        elif isinstance(node, ast.arg):  # a nested function's or a lambda's parameter
            found.setdefault(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            found.setdefault(node.name)
        elif isinstance(node, ast.ClassDef):
            found.setdefault(node.name)
            for child in [*node.decorator_list, *node.bases, *node.keywords]:
                visit(child)
            return  # its body binds attributes and method names, which keep their names
        elif isinstance(node, _Def):
            found.setdefault(node.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for statement in body:
        visit(statement)
    return list(found)


def shape(node: _Def) -> str:
    """The function's AST dump with its local variables renamed by order of first binding.

    Two functions have the same shape when they differ only in formatting, comments and the names of their
    locals: `loss = f(x); return loss` and `l = f(x); return l` match. The parameters keep their names
    (they are the contract: callers pass them by keyword), and so do globals, `global` names, attributes
    and keyword arguments. Renaming is one-to-one, so code that uses its locals differently still differs.
    """
    node = copy.deepcopy(node)
    args = node.args
    parameters = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    fixed = {arg.arg for arg in parameters if arg is not None}
    for child in ast.walk(node):  # (a `nonlocal` in a nested function names one of this function's locals)
        if isinstance(child, ast.Global):
            fixed.update(child.names)
    names = [name for name in _bound_names(node.body) if name not in fixed]
    local = {name: f"<local {index}>" for index, name in enumerate(names)}  # never a real identifier
    for statement in node.body:
        for child in ast.walk(statement):
            if isinstance(child, ast.Name):
                child.id = local.get(child.id, child.id)
            elif isinstance(child, ast.arg):
                child.arg = local.get(child.arg, child.arg)
            elif isinstance(child, ast.ExceptHandler | _Def | ast.ClassDef) and child.name:
                child.name = local.get(child.name, child.name)
    return ast.dump(node)


def functions(source: str) -> dict[str, Function]:
    """Every function and method, top level and in classes (nested ones belong to their parent's body)."""
    lines = source.splitlines(keepends=True)
    found: dict[str, Function] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, _Def):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                text = "".join(lines[first - 1 : node.end_lineno])
                found[prefix + node.name] = Function(prefix + node.name, first, text, shape(node))

    visit(ast.parse(source).body, "")
    return found


def _shift_hunks(diff: list[str], mine: int, theirs: int) -> list[str]:
    """Make hunk headers count lines of the whole files rather than of the two extracts."""

    def shift(match: re.Match[str]) -> str:
        old = int(match.group(1)) + mine - 1
        new = int(match.group(3)) + theirs - 1
        return f"@@ -{old}{match.group(2) or ''} +{new}{match.group(4) or ''} @@"

    return [_HUNK.sub(shift, line, count=1) for line in diff]


def colour_line(line: str) -> str:
    if line.startswith(("---", "+++")):
        return paint(line, "bold")
    if line.startswith("@@"):
        return paint(line, "cyan")
    if line.startswith("-"):
        return paint(line, "red")
    if line.startswith("+"):
        return paint(line, "green")
    return line


def function_diffs(kata: KataInfo, mine_text: str, reference_text: str) -> tuple[list[list[str]], list[str]]:
    """(one unified diff per function that differs, names found only in the learner's file)."""
    mine_path, reference_path = display_path(learner_file(kata)), display_path(kata.solution)
    mine, reference = functions(mine_text), functions(reference_text)
    diffs = []
    for name, theirs in reference.items():
        own = mine.get(name)
        if own is not None and own.shape == theirs.shape:
            continue
        diff = difflib.unified_diff(
            own.source.splitlines(keepends=True) if own else [],
            theirs.source.splitlines(keepends=True),
            f"{mine_path} (yours) {name}" if own else f"{mine_path} (yours): no {name}",
            f"{reference_path} (reference) {name}",
        )
        diffs.append(_shift_hunks(list(diff), own.line if own else 1, theirs.line))
    return diffs, [name for name in mine if name not in reference]


def whole_file_diff(kata: KataInfo, mine_text: str, reference_text: str) -> list[str]:
    return list(
        difflib.unified_diff(
            mine_text.splitlines(keepends=True),
            reference_text.splitlines(keepends=True),
            f"{display_path(learner_file(kata))} (yours)",
            f"{display_path(kata.solution)} (reference)",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="compare", description=__doc__.splitlines()[0])
    parser.add_argument("kata", help='the kata: "4", "k04" or "k04_autograd"')
    parser.add_argument(
        "--peek", action="store_true", help="show the reference even if the kata does not pass"
    )
    args = parser.parse_args(argv)
    kata = select(args.kata)
    path = learner_file(kata)
    if not path.exists():
        return fail(missing_message(kata))
    try:  # before grading: a file that cannot be decoded needs fixing, not a question
        mine_text = read_source(path)
        reference_text = read_source(kata.solution)
    except SourceUnreadable as error:
        return fail(str(error))
    if not args.peek:
        show, why_not = confirmed(kata, "the reference")
        if not show:
            return fail(why_not)

    print(paint(f"kata {number(kata)} - {kata.title}: your code against the reference", "bold"))
    try:
        diffs, only_mine = function_diffs(kata, mine_text, reference_text)
    except (SyntaxError, ValueError) as error:  # ValueError: null bytes, before Python 3.12
        line = f":{error.lineno}" if getattr(error, "lineno", None) else ""
        reason = error.msg if isinstance(error, SyntaxError) else str(error)
        print(f"{display_path(path)}{line}: {reason} - comparing whole files instead")
        diffs, only_mine = [whole_file_diff(kata, mine_text, reference_text)], []
    for diff in diffs:
        print()
        for line in diff:
            print(colour_line(line.rstrip("\n")))
    print()
    if only_mine:
        print(f"only in yours (helpers the reference does without): {', '.join(only_mine)}")
    if diffs:
        print(f"{len(diffs)} function(s) differ from the reference (formatting and comments aside).")
    else:
        print("every function matches the reference (formatting and comments aside).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
