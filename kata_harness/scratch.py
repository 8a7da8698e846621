"""Scratch copies for drill and mock: a kata file with chosen tasks blank, graded apart from katas/.

A unit of practice is one task of a kata ("k04_autograd.derivative"), or a whole bug hunt ("k19_...").
Its scratch file lives in ``.katas-scratch/<round>/``; the learner's own files in ``katas/`` are never read
or written, and grading a scratch file saves no kata status.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kata_harness.catalog import KataInfo, find_kata
from kata_harness.source import REPO_ROOT
from kata_harness.stubgen import backup_path, learner_start, make_stub
from kata_harness.workflow import grade

SCRATCH = REPO_ROOT / ".katas-scratch"


def unit_name(kata: KataInfo, task: str | None) -> str:
    """ "k04_autograd.derivative" for a task, "k19_..." for a whole bug hunt."""
    return kata.name if task is None else f"{kata.name}.{task}"


def parse_unit(unit: str) -> tuple[KataInfo, str | None]:
    """(kata, task or None): the inverse of unit_name. Raises UnknownKata (a ValueError) or ValueError."""
    name, _, task = unit.partition(".")
    kata = find_kata(name)
    if (task and task not in kata.tasks) or (not task and not kata.bug_hunt):
        raise ValueError(f"{unit!r} is no task of {kata.name}")
    return kata, task or None


def units(kata: KataInfo) -> list[str]:
    """The units a kata offers: each of its tasks, or the whole file for a bug hunt."""
    return [unit_name(kata, None)] if kata.bug_hunt else [unit_name(kata, task) for task in kata.tasks]


def write_scratch(folder: Path, kata: KataInfo, blank: Iterable[str] | None, *, keep_rest: bool) -> Path:
    """Write the kata into `folder` with the tasks in `blank` stubbed (None: every task, or a bug hunt's
    broken program). `keep_rest` keeps the reference's code for the other tasks (a drill of a kata the
    learner has passed); otherwise they are stubs too (a mock of a kata they have not seen)."""
    reference = kata.solution.read_text(encoding="utf-8")
    if kata.bug_hunt or blank is None:
        text = learner_start(kata.solution)
    else:
        text = make_stub(reference, only=set(blank) if keep_rest else None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / kata.solution.name
    if path.exists() and path.read_text(encoding="utf-8") != text:  # an earlier drill's answer: keep it
        backup = backup_path(f"{folder.name}-{kata.name}")
        backup.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, backup)
    path.write_text(text, encoding="utf-8")
    return path


def tests_for(kata: KataInfo, tasks: Iterable[str]) -> list[str]:
    """The kata's tests that use some of `tasks` and no other task, read from the grader's source.

    A test uses a task when it, a helper or fixture it names (transitively), or its decorators read
    `kata.<task>`. A bug hunt's tests are its tasks.
    """
    chosen = set(tasks)
    if kata.bug_hunt:
        return [name for name in kata.tasks if name in chosen]
    tree = ast.parse(kata.test_file.read_text(encoding="utf-8"))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    direct: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for name, node in functions.items():
        direct[name] = {
            child.attr
            for child in ast.walk(node)
            if isinstance(child, ast.Attribute) and getattr(child.value, "id", None) == "kata"
        } & set(kata.tasks)
        referenced = {child.id for child in ast.walk(node) if isinstance(child, ast.Name)}
        if isinstance(node, ast.FunctionDef):  # fixtures arrive as parameters named after them
            referenced |= {arg.arg for arg in node.args.args}
        calls[name] = (referenced & set(functions)) - {name}

    def used(name: str, seen: set[str]) -> set[str]:
        seen.add(name)
        found = set(direct[name])
        for callee in calls[name] - seen:
            found |= used(callee, seen)
        return found

    selected = []
    for name in functions:
        if name.startswith("test_"):
            needs = used(name, set())
            if needs and needs <= chosen:
                selected.append(name)
    return selected


def grade_scratch(folder: Path, kata: KataInfo, tests: list[str] | None) -> list[dict[str, Any]]:
    """The records of `tests` (None: all) run on the kata's file in `folder`. Raises GradingUnavailable."""
    return grade(kata, source=folder, tests=tests)


def passed(records: list[dict[str, Any]]) -> bool:
    """Whether every graded test passed (skips, e.g. CUDA tests on a CPU, do not count against)."""
    graded = [record for record in records if record["outcome"] != "skipped"]
    return bool(graded) and all(record["outcome"] == "passed" for record in graded)
