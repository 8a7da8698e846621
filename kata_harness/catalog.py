"""The katas that exist, read from solutions/ without importing them, and the ways a learner may name one."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kata_harness.source import REPO_ROOT

SOLUTIONS = REPO_ROOT / "solutions"
QUESTION_PREFIX = "Interview question:"
FOLLOW_UPS_HEADING = "Follow-up questions"
_KATA_FILE = re.compile(r"^k(\d\d)_\w+$")
GIVEN_MARKER = "# stub: keep"  # a def or class the learner is given whole (see stubgen)
BUG_HUNT_PREFIX = "Bug hunt"  # a title that starts so marks a kata whose learner file is a broken program
# The tracks, as ranges of kata numbers: a mock interview mixes them, the README groups by them.
TRACKS = (
    ("interview questions", range(1, 11)),
    ("build it from scratch", range(11, 15)),
    ("train it right, at scale", range(15, 19)),
    ("interview rounds", range(19, 100)),
)
# "Difficulty 2/5, about 25 minutes, after katas 3 and 4." in the module docstring: what a learner plans by.
_METADATA = re.compile(
    r"^Difficulty (?P<difficulty>[1-5])/5, about (?P<minutes>\d+) minutes"
    r"(?:, after katas? (?P<after>[\d, and]+))?\.$"
)


@dataclass(frozen=True)
class KataInfo:
    """One kata: module name (e.g. "k04_autograd"), title, interview question, tasks in source order.

    A bug hunt's tasks are its tests, one per planted bug, in file order: each names a symptom to remove.
    """

    name: str
    title: str
    question: str
    tasks: tuple[str, ...]
    follow_ups: tuple[str, ...] = ()
    difficulty: int | None = None  # 1 (warm-up) to 5 (hardest)
    minutes: int | None = None  # a first attempt, hints included
    after: tuple[int, ...] = ()  # the numbers of the katas to do first
    bug_hunt: bool = False

    @property
    def track(self) -> str:
        return next((name for name, numbers in TRACKS if self.number in numbers), TRACKS[-1][0])

    @property
    def number(self) -> int:
        return int(self.name[1:3])

    @property
    def solution(self) -> Path:
        return SOLUTIONS / f"{self.name}.py"

    @property
    def test_file(self) -> Path:
        return REPO_ROOT / "tests" / f"test_{self.name}.py"


class UnknownKata(ValueError):
    """A kata selector that names no kata; the message lists the valid ones."""


def _follow_ups(lines: list[str]) -> tuple[str, ...]:
    """The "- question" bullets under the docstring's follow-up heading, each joined onto one line."""
    if FOLLOW_UPS_HEADING not in lines:
        return ()
    questions: list[str] = []
    for line in lines[lines.index(FOLLOW_UPS_HEADING) + 2 :]:
        if line.startswith("- "):
            questions.append(line[2:].strip())
        elif line.startswith("  ") and questions:
            questions[-1] += " " + line.strip()
        elif line.strip() or questions:
            break
    return tuple(questions)


def read_kata(path: Path) -> KataInfo:
    """One kata as its reference solution file describes it."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    doc = ast.get_docstring(tree) or path.stem
    lines = doc.splitlines()
    questions = [
        line.removeprefix(QUESTION_PREFIX).strip() for line in lines if line.startswith(QUESTION_PREFIX)
    ]
    source_lines = source.splitlines()
    tasks = tuple(
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and not node.name.startswith("_")
        and not source_lines[node.lineno - 1].rstrip().endswith(GIVEN_MARKER)  # scaffolding, not a task
    )
    metadata = next((match for line in lines if (match := _METADATA.match(line.strip()))), None)
    bug_hunt = lines[0].startswith(BUG_HUNT_PREFIX)
    return KataInfo(
        name=path.stem,
        title=lines[0].rstrip("."),
        question=questions[0] if questions else "",
        tasks=_test_names(path.stem) if bug_hunt else tasks,
        follow_ups=_follow_ups(lines),
        difficulty=int(metadata["difficulty"]) if metadata else None,
        minutes=int(metadata["minutes"]) if metadata else None,
        after=tuple(int(n) for n in re.findall(r"\d+", metadata["after"] or "")) if metadata else (),
        bug_hunt=bug_hunt,
    )


def _test_names(name: str) -> tuple[str, ...]:
    """The test functions of a kata's grader, in file order (a bug hunt's tasks)."""
    path = REPO_ROOT / "tests" / f"test_{name}.py"
    if not path.exists():
        return ()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return tuple(
        node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    )


@cache
def all_katas() -> tuple[KataInfo, ...]:
    """Every kata, in number order, as its reference solution describes it."""
    return tuple(read_kata(path) for path in sorted(SOLUTIONS.glob("k[0-9][0-9]_*.py")))


def kata_of_test_file(path: str | Path) -> str | None:
    """ "k04_autograd" for tests/test_k04_autograd.py; None for a file that grades no kata."""
    stem = Path(path).stem.removeprefix("test_")
    return stem if _KATA_FILE.match(stem) else None


def find_kata(selector: str) -> KataInfo:
    """The kata a learner means by "4", "04", "k04", "k04_autograd", "test_k04_autograd" or a file path."""
    key = Path(selector.strip()).stem.removeprefix("test_").lower()
    for kata in all_katas():
        if key in (kata.name, kata.name[:3]) or (key.isdigit() and int(key) == kata.number):
            return kata
    valid = ", ".join(f"{kata.number} ({kata.name})" for kata in all_katas())
    raise UnknownKata(f"no kata {selector!r}; choose one of: {valid}")


def is_kata_selector(arg: str) -> bool:
    """Whether a command-line word names a kata rather than being a pytest option or test path."""
    if arg.startswith("-") or "::" in arg:
        return False
    key = Path(arg).stem.removeprefix("test_").lower()
    return key.isdigit() or bool(re.fullmatch(r"k\d\d(_\w+)?", key))
