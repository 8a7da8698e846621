"""Show the learner's kata beside the reference: a unified diff of each function whose code differs.

Usage: ``python -m kata_harness.compare KATA [--peek]`` (``nox -s compare -- 4``). Until the kata passes,
it asks before showing anything (on a terminal), or refuses (elsewhere); ``--peek`` skips both the
grading and the question.
"""

from __future__ import annotations

import ast
import difflib
import re
import sys
from dataclasses import dataclass

from kata_harness.catalog import KataInfo
from kata_harness.source import display_path
from kata_harness.workflow import (
    GradingUnavailable,
    OneLineParser,
    fail,
    failures,
    grade,
    learner_file,
    missing_message,
    number,
    paint,
    select,
)

PROMPT = "The kata does not pass yet; show the reference anyway? [y/N] "
_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


@dataclass(frozen=True)
class Function:
    """One function or method: its qualified name, first line (decorators included), source and AST dump."""

    name: str
    line: int
    source: str
    shape: str  # ast.dump: equal for code that differs only in formatting and comments


def functions(source: str) -> dict[str, Function]:
    """Every function and method, top level and in classes (nested ones belong to their parent's body)."""
    lines = source.splitlines(keepends=True)
    found: dict[str, Function] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                text = "".join(lines[first - 1 : node.end_lineno])
                found[prefix + node.name] = Function(prefix + node.name, first, text, ast.dump(node))

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


def confirmed(kata: KataInfo) -> tuple[bool, str]:
    """(show?, why not): grade the kata; if it fails, ask on a terminal, refuse elsewhere."""
    print(paint(f"grading kata {number(kata)} before showing its reference...", "dim"), flush=True)
    try:
        records = grade(kata, stop_at_first_failure=True)
    except GradingUnavailable as error:
        status = f"cannot tell whether kata {number(kata)} passes ({error})"
    else:
        failing = [record for record in failures(records) if record["outcome"] != "not run"]
        if not failing:
            return True, ""
        status = f"kata {number(kata)} does not pass yet ({failing[0]['name']} fails)"
    if not sys.stdin.isatty():
        return False, f"{status}: finish it first, or add --peek to see the reference anyway"
    print(status + ".")
    try:
        answer = input(PROMPT)
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes"), "not shown: the reference stays a surprise"


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
    if not args.peek:
        show, why_not = confirmed(kata)
        if not show:
            return fail(why_not)

    mine_text = path.read_text(encoding="utf-8")
    reference_text = kata.solution.read_text(encoding="utf-8")
    print(paint(f"kata {number(kata)} - {kata.title}: your code against the reference", "bold"))
    try:
        diffs, only_mine = function_diffs(kata, mine_text, reference_text)
    except SyntaxError as error:
        print(f"{display_path(path)}:{error.lineno}: {error.msg} - comparing whole files instead")
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
