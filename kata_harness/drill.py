"""Spaced repetition: re-pose a task you have passed, blank again, in a scratch copy, on a Leitner schedule.

Usage (``nox -s drill``)::

    nox -s drill              the task due next, written to .katas-scratch/drill/ (or the one you are on)
    nox -s drill -- --grade   grade it with the kata's tests; a pass moves it up a box, a fail back to box 1
    nox -s drill -- --list    what is due now and later
    nox -s drill -- --skip    put the task you are on back, as a fail

Every task of a kata you have passed (a bug hunt: the whole program) starts in box 0, due now. A task you
rewrite correctly at the first grading moves up a box and comes back after ``INTERVALS[box]`` days; one you
needed more than one grading for (or skipped) drops to box 1 and comes back the next day. The boxes live in
the progress file under "drill". The scratch file holds the reference's code for the kata's other tasks;
``katas/`` is never touched, and a drill never changes a kata's status.
"""

from __future__ import annotations

import sys
from datetime import date, timedelta
from typing import Any

from kata_harness.catalog import all_katas
from kata_harness.progress import DONE, NOT_STARTED, read_progress_or_empty, read_section, update_section
from kata_harness.scratch import SCRATCH, grade_scratch, parse_unit, passed, units, write_scratch
from kata_harness.source import display_path
from kata_harness.workflow import GradingUnavailable, OneLineParser, fail, failures, paint, tally

FOLDER = SCRATCH / "drill"
INTERVALS = {1: 1, 2: 3, 3: 7, 4: 16, 5: 35}  # days until a task in each box is due again
TOP_BOX = max(INTERVALS)


def today() -> date:
    return date.today()


def boxes(section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{unit: {"box": int, "due": "YYYY-MM-DD"}} for every unit of every passed kata, new ones in box 0."""
    progress = read_progress_or_empty()
    saved = section.get("boxes", {})
    table = {}
    for kata in all_katas():
        if progress.get(kata.name) != DONE:
            continue
        for unit in units(kata):
            entry = saved.get(unit)
            valid = isinstance(entry, dict) and type(entry.get("box")) is int and _date(entry.get("due"))
            table[unit] = entry if valid else {"box": 0, "due": today().isoformat()}
    return table


def _date(text: Any) -> date | None:
    try:
        return date.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def due(table: dict[str, dict[str, Any]]) -> list[str]:
    """Units due today or earlier: the lowest box first, then the longest overdue, then kata order."""
    ready = [unit for unit, entry in table.items() if _date(entry["due"]) <= today()]
    order = list(table)
    return sorted(ready, key=lambda u: (table[u]["box"], table[u]["due"], order.index(u)))


def moved(entry: dict[str, Any], first_try: bool) -> dict[str, Any]:
    """The unit's next box and due date after a drill: up one on a first-try pass, else back to box 1."""
    box = min(entry["box"] + 1, TOP_BOX) if first_try else 1
    return {"box": box, "due": (today() + timedelta(days=INTERVALS[box])).isoformat()}


def describe(unit: str) -> str:
    kata, task = parse_unit(unit)
    what = f"`{task}`" if task else "the whole program (every planted bug)"
    return f"kata {kata.number} ({kata.title}): {what}"


def show_list(table: dict[str, dict[str, Any]], current: str | None) -> int:
    if not table:
        print("nothing to drill yet: the drill re-poses tasks of katas you have passed (`nox -s check`).")
        return 0
    ready = due(table)
    print(paint(f"due now: {len(ready)}", "bold"))
    for unit in ready:
        marker = "  <- you are on it" if unit == current else ""
        print(f"  box {table[unit]['box']}  {describe(unit)}{marker}")
    later = sorted((u for u in table if u not in ready), key=lambda u: table[u]["due"])
    if later:
        print(paint(f"later: {len(later)}", "bold"))
        for unit in later:
            print(f"  {table[unit]['due']}  box {table[unit]['box']}  {describe(unit)}")
    return 0


def start(table: dict[str, dict[str, Any]], current: dict[str, Any] | None) -> int:
    if current:
        kata, _ = parse_unit(current["unit"])
        print(f"you are drilling {describe(current['unit'])}")
        print(f"  edit {display_path(FOLDER / kata.solution.name)}, then: nox -s drill -- --grade")
        return 0
    ready = due(table)
    if not ready:
        if not table:
            print("nothing to drill yet: the drill re-poses tasks of katas you have passed (`nox -s check`).")
        else:
            soonest = min(table, key=lambda u: table[u]["due"])
            print(f"nothing is due today. Next: {describe(soonest)} on {table[soonest]['due']}.")
        return 0
    unit = ready[0]
    kata, task = parse_unit(unit)
    path = write_scratch(FOLDER, kata, None if task is None else [task], keep_rest=True)
    update_section("drill", lambda section: section.update(current={"unit": unit, "gradings": 0}))
    print(paint(f"drill: {describe(unit)}", "bold") + f"  (box {table[unit]['box']}, {len(ready)} due)")
    print(f"  {kata.question}")
    print(f"  write it again from its docstring in {display_path(path)}")
    print("  then grade it: nox -s drill -- --grade   (no peeking at katas/ or solutions/)")
    return 0


def grade_current(table: dict[str, dict[str, Any]], current: dict[str, Any] | None) -> int:
    if not current:
        return fail("no drill in progress: `nox -s drill` poses the next one", 1)
    unit = current["unit"]
    kata, _ = parse_unit(unit)
    path = FOLDER / kata.solution.name
    if not path.exists():
        return fail(f"{display_path(path)} is gone: `nox -s drill -- --skip`, then `nox -s drill` again", 1)
    try:
        records = grade_scratch(FOLDER, kata, tests=None)  # its other tasks are the reference's
    except GradingUnavailable as error:
        return fail(str(error), 1)
    failing = failures(records)
    untouched = bool(failing) and all(record["outcome"] == NOT_STARTED for record in failing)
    gradings = int(current.get("gradings", 0)) + (0 if untouched else 1)  # a blank task is no attempt
    if not passed(records):
        first = failing[0] if failing else None
        print(paint(f"not yet: {tally(records)}", "yellow"))
        if first:
            print(f"  {first['name']}: {first['message']}")
            print(f"  edit {first.get('location') or display_path(FOLDER / kata.solution.name)}")
        update_section("drill", lambda section: section["current"].update(gradings=gradings))
        return 1
    entry = moved(table.get(unit, {"box": 0}), first_try=gradings <= 1)
    finish(unit, entry)
    verdict = "first try" if gradings <= 1 else f"after {gradings} gradings"
    print(paint(f"passed ({tally(records)}, {verdict}): box {entry['box']}, due {entry['due']}", "green"))
    remaining = [u for u in due({**table, unit: entry}) if u != unit]
    print(f"next: nox -s drill ({len(remaining)} due)" if remaining else "nothing else is due today.")
    return 0


def finish(unit: str, entry: dict[str, Any]) -> None:
    def change(section: dict[str, Any]) -> None:
        section.setdefault("boxes", {})[unit] = entry
        section.pop("current", None)

    update_section("drill", change)


def skip(table: dict[str, dict[str, Any]], current: dict[str, Any] | None) -> int:
    if not current:
        return fail("no drill in progress", 1)
    unit = current["unit"]
    entry = moved(table.get(unit, {"box": 0}), first_try=False)
    finish(unit, entry)
    print(f"put back {describe(unit)}: box 1, due {entry['due']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="drill", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--grade", action="store_true", help="grade the task you are drilling")
    group.add_argument("--list", action="store_true", help="what is due now and later")
    group.add_argument("--skip", action="store_true", help="put the task back, as a fail")
    args = parser.parse_args(argv)
    section = read_section("drill")
    table = boxes(section)
    current = section.get("current")
    if current is not None:
        try:
            parse_unit(current.get("unit", "") if isinstance(current, dict) else "")
        except ValueError:  # a kata renamed or removed since: forget that drill
            current = None
            update_section("drill", lambda s: s.pop("current", None))
    try:
        if args.list:
            return show_list(table, current and current["unit"])
        if args.grade:
            return grade_current(table, current)
        if args.skip:
            return skip(table, current)
        return start(table, current)
    except BrokenPipeError:  # e.g. `--list | head`
        raise
    except OSError as error:
        return fail(f"cannot save the drill to the progress file: {error}", 1)


if __name__ == "__main__":
    sys.exit(main())
