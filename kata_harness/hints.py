"""Print the next hint for the task a learner is on: a nudge, then the API to reach for, then the shape.

Usage: ``python -m kata_harness.hints KATA [--all]`` (``nox -s hint -- 4``). Hints live in
``hints/kNN_slug.toml``, one table per task (the kata's public names, in source order), each with the
keys ``nudge``, ``api`` and ``shape``. A bug hunt's tasks are its planted bugs, one per test, each with
``symptom``, ``area`` and ``fix``. How many hints each task has shown is kept in ``.katas-hints.json``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from kata_harness.catalog import KataInfo, all_katas
from kata_harness.progress import DONE, read_progress_or_empty
from kata_harness.source import display_path
from kata_harness.workflow import (
    HINT_STATE,
    HINTS,
    GradingUnavailable,
    OneLineParser,
    SourceUnreadable,
    fail,
    failures,
    grade,
    learner_file,
    missing_message,
    number,
    paint,
    read_source,
    select,
    tally,
    wrap,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: nox itself depends on tomli there
    import tomli as tomllib  # type: ignore[no-redef]

LEVELS = (("nudge", "a nudge"), ("api", "the API to reach for"), ("shape", "the shape of the solution"))
BUG_HUNT_LEVELS = (("symptom", "what the symptom means"), ("area", "where to look"), ("fix", "the fix"))


def levels(kata: KataInfo) -> tuple[tuple[str, str], ...]:
    """The (key, label) of each hint level, in the order they are shown."""
    return BUG_HUNT_LEVELS if kata.bug_hunt else LEVELS


class HintsMissing(Exception):
    """The kata's hints file is absent, unreadable or lacks a task; the message is one line."""


def hints_file(kata: KataInfo) -> Path:
    return HINTS / f"{kata.name}.toml"


def load_hints(kata: KataInfo) -> dict[str, dict[str, str]]:
    """Every task's hints, {task: {"nudge": ..., "api": ..., "shape": ...}}; each task must have all three."""
    path = hints_file(kata)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HintsMissing(
            f"kata {number(kata)} has no hints yet ({display_path(path)} is missing)"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise HintsMissing(f"{display_path(path)}: {error}") from None
    for task in kata.tasks:
        hints = table.get(task)
        lacking = [key for key, _ in levels(kata) if not isinstance(hints, dict) or not hints.get(key)]
        if lacking:
            raise HintsMissing(f"{display_path(path)} has no {', '.join(lacking)} hint for `{task}`")
    return {task: {key: str(table[task][key]) for key, _ in levels(kata)} for task in kata.tasks}


def problems_with_hints(kata: KataInfo) -> list[str]:
    """What is wrong with a kata's hints file (for `nox -s verify`): missing file, task or level; extras."""
    try:
        load_hints(kata)
    except HintsMissing as error:
        return [str(error)]
    table = tomllib.loads(hints_file(kata).read_text(encoding="utf-8"))
    extra = [name for name in table if name not in kata.tasks]
    problems = [f"{display_path(hints_file(kata))}: `{name}` is not a task of {kata.name}" for name in extra]
    if list(table)[: len(kata.tasks)] != list(kata.tasks):
        problems.append(f"{display_path(hints_file(kata))}: tasks are not in source order {list(kata.tasks)}")
    for task, hints in table.items():
        unknown = sorted(set(hints) - {key for key, _ in levels(kata)}) if isinstance(hints, dict) else []
        if unknown:
            problems.append(f"{display_path(hints_file(kata))}: `{task}` has unknown keys {unknown}")
    return problems


# --- which task the learner is on ---------------------------------------------------------------


def task_spans(source: str, tasks: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """{task: (first line, last line)} for each task defined at the top of the learner's file."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: null bytes, before Python 3.12
        return {}
    return {
        node.name: (node.lineno, node.end_lineno or node.lineno)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name in tasks
    }


def current_task(kata: KataInfo, records: list[dict[str, Any]], source: str) -> str | None:
    """The first task, in source order, that a failing test is about; None when nothing failed or none is.

    A failure whose location is inside a task's code in the learner's file blames that task; otherwise
    every task the failing test used is suspect. A bug hunt's task is its first failing test.
    """
    if kata.bug_hunt:
        return next((r["name"] for r in failures(records) if r["name"] in kata.tasks), None)
    spans = task_spans(source, kata.tasks)
    path = display_path(learner_file(kata))
    blamed: set[str] = set()
    for record in failures(records):
        file, _, line = record.get("location", "").rpartition(":")
        inside = [
            task
            for task, (first, last) in spans.items()
            if file == path and line.isdigit() and first <= int(line) <= last
        ]
        blamed.update(inside or [name for name in record.get("names", []) if name in kata.tasks])
    return next((task for task in kata.tasks if task in blamed), None)


def _still_a_stub(node: ast.AST) -> bool:
    """Whether a function, or any method of a class, still raises NotImplementedError."""
    for child in ast.walk(node):
        if isinstance(child, ast.Raise) and child.exc is not None:
            exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                return True
    return False


def first_stub_task(kata: KataInfo, source: str) -> str:
    """Without grading: the first task whose code still raises NotImplementedError, else the first task."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return kata.tasks[0]
    stubs = {
        node.name for node in tree.body if getattr(node, "name", None) in kata.tasks and _still_a_stub(node)
    }
    return next((task for task in kata.tasks if task in stubs), kata.tasks[0])


# --- saved state: levels shown, last grading --------------------------------------------------------


def notice(message: str) -> None:
    """One line on stderr about something the command worked around."""
    print(paint(f"note: {message}", "yellow"), file=sys.stderr)


def _valid_entry(entry: Any) -> dict[str, Any] | None:
    """A kata's saved hint state with anything malformed dropped; None when nothing in it is usable."""
    if not isinstance(entry, dict):
        return None
    clean: dict[str, Any] = {}
    shown = entry.get("shown")
    if isinstance(shown, dict):
        clean["shown"] = {
            task: level
            for task, level in shown.items()
            if type(level) is int and 0 <= level <= len(LEVELS)  # not bool, not "2", not 2.0
        }
    graded = entry.get("graded")
    if (
        isinstance(graded, dict)
        and isinstance(graded.get("digest"), str)
        and (graded.get("task") is None or isinstance(graded.get("task"), str))
        and all(isinstance(graded.get(key, ""), str) for key in ("tally", "note"))
    ):
        clean["graded"] = graded
    return clean


def load_state() -> dict[str, Any]:
    """The hint state saved by earlier runs; anything unreadable in it is dropped with a one-line notice."""
    try:
        text = HINT_STATE.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        notice(f"cannot read {display_path(HINT_STATE)} ({error}); the hints start over")
        return {}
    try:
        state = json.loads(text)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        notice(f"{display_path(HINT_STATE)} is not hint state (a JSON object); the hints start over")
        return {}
    clean = {name: entry for name, raw in state.items() if (entry := _valid_entry(raw)) is not None}
    if clean != state:
        notice(f"ignored malformed entries in {display_path(HINT_STATE)}")
    return clean


def save_state(state: dict[str, Any]) -> None:
    try:
        HINT_STATE.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as error:
        notice(f"cannot save {display_path(HINT_STATE)} ({error}); the next hint starts from this one again")


def digest(kata: KataInfo) -> str:
    """What a grading depends on: the learner's file and the kata's tests."""
    hasher = hashlib.sha256()
    for path in (learner_file(kata), kata.test_file):
        hasher.update(path.read_bytes() if path.exists() else b"")
        hasher.update(b"\0")
    return hasher.hexdigest()


def locate_task(kata: KataInfo, state: dict[str, Any], source: str) -> tuple[str | None, str, str]:
    """(task or None when the kata passes, tally, note) - graded now, or remembered if nothing changed.

    `state` is what load_state returned; `source` the learner's file.
    """
    entry = state.setdefault(kata.name, {})
    key = digest(kata)
    cached = entry.get("graded", {})
    task = cached.get("task")
    if cached.get("digest") == key and (task is None or task in kata.tasks):
        return task, cached.get("tally", ""), cached.get("note", "")
    print(paint(f"grading kata {number(kata)} to find the task you are on...", "dim"), flush=True)
    try:
        records = grade(kata)
    except GradingUnavailable as error:
        return first_stub_task(kata, source), "", f"could not grade ({error}); guessed the task from the code"
    task = current_task(kata, records, source)
    note = ""
    failing = failures(records)
    if failing and failing[0]["outcome"] == "broken":
        note = failing[0]["message"]  # e.g. a syntax error: fix that before any hint can help
    elif failing and task is None:
        note = f"the failing tests name no task; the first one says: {failing[0]['message']}"
    if failing and task is None:
        task = first_stub_task(kata, source)
    entry["graded"] = {"digest": key, "task": task, "tally": tally(records), "note": note}
    return task, tally(records), note


# --- printing -----------------------------------------------------------------------------------------


def heading(kata: KataInfo) -> str:
    return paint(f"kata {number(kata)} - {kata.title}", "bold")


def show_level(kata: KataInfo, task: str, hints: dict[str, str], level: int) -> None:
    key, label = levels(kata)[level - 1]
    print(paint(f"hint {level}/{len(levels(kata))} for `{task}` - {label}:", "cyan"))
    print(wrap(hints[key]))


def show_all(kata: KataInfo, hints: dict[str, dict[str, str]]) -> None:
    print(heading(kata) + f": every hint, {len(kata.tasks)} task(s)")
    for index, task in enumerate(kata.tasks, 1):
        print()
        print(paint(f"task {index}/{len(kata.tasks)}: {task}", "bold"))
        for level, (key, label) in enumerate(levels(kata), 1):
            print(paint(f"  {level}. {label}:", "cyan"))
            print(wrap(hints[task][key], indent="     "))


def default_kata() -> KataInfo | None:
    """The first kata the last `nox -s check` did not see done, when a learner names none."""
    progress = read_progress_or_empty()
    if not progress:
        return None
    return next((kata for kata in all_katas() if progress.get(kata.name) != DONE), None)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="hint", description=__doc__.splitlines()[0])
    parser.add_argument(
        "kata", nargs="?", help='the kata: "4", "k04" or "k04_autograd" (default: next unfinished)'
    )
    parser.add_argument("--all", action="store_true", help="every hint of every task of the kata")
    args = parser.parse_args(argv)
    if args.kata is not None:
        kata = select(args.kata)
    else:
        found = default_kata()
        if found is None:
            return fail("say which kata: `nox -s hint -- 4` (or run `nox -s check` first)", 2)
        kata = found
    try:
        hints = load_hints(kata)
    except HintsMissing as error:
        return fail(str(error), 1)
    if args.all:
        show_all(kata, hints)
        return 0
    if not learner_file(kata).exists():
        return fail(missing_message(kata), 1)
    try:
        source = read_source(learner_file(kata))
    except SourceUnreadable as error:
        return fail(str(error), 1)

    state = load_state()
    task, score, note = locate_task(kata, state, source)
    if task is None:
        save_state(state)
        print(heading(kata) + f": {score} - no hint needed.")
        print(f"compare your code with the reference: nox -s compare -- {number(kata)}")
        return 0
    shown = state[kata.name].setdefault("shown", {})
    level = min(int(shown.get(task, 0)) + 1, len(levels(kata)))
    shown[task] = level
    save_state(state)

    index = kata.tasks.index(task) + 1
    where = task_spans(source, kata.tasks).get(task)
    place = f" ({display_path(learner_file(kata))}:{where[0]})" if where else ""
    print(heading(kata) + (f" ({score})" if score else ""))
    if note:
        print(paint(f"note: {note}", "yellow"))
    print(f"task {index}/{len(kata.tasks)}: {paint(task, 'bold')}{place}")
    show_level(kata, task, hints[task], level)
    if level < len(levels(kata)):
        again = levels(kata)[level][1]
        print(paint(f"stuck still? `nox -s hint -- {number(kata)}` again shows {again}.", "dim"))
    else:
        print(
            paint(
                f"that was the last hint for `{task}`; every hint: `nox -s hint -- {number(kata)} --all`.",
                "dim",
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
