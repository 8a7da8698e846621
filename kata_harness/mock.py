"""Mock interview: tasks you have not seen, from several tracks, against a clock, then the model answers.

Usage (``nox -s mock``)::

    nox -s mock -- --minutes 45   start: pick tasks, write them blank to .katas-scratch/mock-<time>/
    nox -s mock -- --grade        grade now and show the time left (after the time is up: finish)
    nox -s mock -- --finish       grade, save the result, show the model answers to the questions asked
    nox -s mock -- --status       the tasks and the time left
    nox -s mock -- --abandon      end it without a result

Tasks come from katas you have not started first, one kata per track in turn, each kata's tasks from its
first (they build on each other), sized by the katas' estimated minutes. Each mock has its own scratch
folder, so no earlier answer is ever overwritten, and ``katas/`` is never touched. Results are kept in the
progress file under "mock"; a kata's own status does not change.
"""

from __future__ import annotations

import math
import sys
from datetime import datetime, timedelta
from itertools import zip_longest
from typing import Any

from kata_harness.catalog import TRACKS, KataInfo, all_katas, find_kata
from kata_harness.explain import AnswersMissing, explain
from kata_harness.progress import NOT_STARTED, read_progress_or_empty, read_section, update_section
from kata_harness.scratch import SCRATCH, grade_scratch, passed, tests_for, write_scratch
from kata_harness.source import display_path
from kata_harness.workflow import GradingUnavailable, OneLineParser, fail, failures, paint, tally

DEFAULT_MINUTES = 45
UNKNOWN_MINUTES = 30  # for a kata whose docstring gives no estimate


def now() -> datetime:
    return datetime.now().replace(microsecond=0)


def order(katas: list[KataInfo], progress: dict[str, str]) -> list[KataInfo]:
    """Unseen katas before seen ones; within each, one kata per track in turn, lowest numbers first."""

    def interleaved(group: list[KataInfo]) -> list[KataInfo]:
        by_track = [[k for k in group if k.track == track] for track, _ in TRACKS]
        return [k for row in zip_longest(*by_track) for k in row if k is not None]

    unseen = [k for k in katas if progress.get(k.name, NOT_STARTED) == NOT_STARTED]
    return interleaved(unseen) + interleaved([k for k in katas if k not in unseen])


def pick(minutes: int, katas: list[KataInfo], progress: dict[str, str]) -> list[tuple[KataInfo, list[str]]]:
    """(kata, tasks) pairs filling about `minutes`: per kata the longest run of first tasks that fits in
    the time left and in half the interview (so tracks mix); at least one task in all."""
    picked: list[tuple[KataInfo, list[str]]] = []
    left = minutes
    for kata in order(katas, progress):
        per_task = (kata.minutes or UNKNOWN_MINUTES) / len(kata.tasks)
        if kata.bug_hunt:
            options = [list(kata.tasks)] if per_task * len(kata.tasks) <= left else []
        else:
            share = max(min(left, minutes / 2), per_task)
            options = [
                list(kata.tasks[:n])
                for n in range(len(kata.tasks), 0, -1)
                if n * per_task <= min(left, share) and tests_for(kata, kata.tasks[:n])
            ]
        if options:
            tasks = options[0]
            picked.append((kata, tasks))
            left -= math.ceil(per_task * len(tasks))
        if left < 5:
            break
    if not picked:  # the shortest interview still asks one thing
        kata = next(k for k in order(katas, progress) if not k.bug_hunt)
        picked.append((kata, [kata.tasks[0]]))
    return picked


def start(minutes: int) -> int:
    katas = list(all_katas())
    picked = pick(minutes, katas, read_progress_or_empty())
    started = now()
    folder = SCRATCH / f"mock-{started:%Y%m%d-%H%M%S}"
    plan = []
    for kata, tasks in picked:
        whole = kata.bug_hunt or len(tasks) == len(kata.tasks)
        write_scratch(folder, kata, None if whole else tasks, keep_rest=False)
        plan.append({"kata": kata.name, "tasks": tasks, "tests": None if whole else tests_for(kata, tasks)})
    current = {
        "started": started.isoformat(),
        "minutes": minutes,
        "folder": display_path(folder),
        "plan": plan,
    }
    update_section("mock", lambda section: section.update(current=current))
    until = started + timedelta(minutes=minutes)
    print(paint(f"mock interview: {minutes} minutes, until {until:%H:%M}", "bold"))
    show_plan(current)
    print("grade on demand: nox -s mock -- --grade    finish: nox -s mock -- --finish")
    return 0


def show_plan(current: dict[str, Any]) -> None:
    folder = current["folder"]
    for index, item in enumerate(current["plan"], 1):
        kata = find_kata(item["kata"])
        what = "fix every planted bug" if kata.bug_hunt else ", ".join(f"`{t}`" for t in item["tasks"])
        print(f"{index}. kata {kata.number} ({kata.title}): {what}")
        print(f"   question: {kata.question}")
        print(f"   in {folder}/{kata.name}.py")


def time_left(current: dict[str, Any]) -> timedelta:
    deadline = datetime.fromisoformat(current["started"]) + timedelta(minutes=current["minutes"])
    return deadline - now()


def clock(current: dict[str, Any]) -> str:
    left = time_left(current)
    if left <= timedelta(0):
        return "time is up"
    return f"{int(left.total_seconds() // 60)} min {int(left.total_seconds() % 60)} s left"


def grade_plan(current: dict[str, Any]) -> list[dict[str, Any]]:
    """One result per planned kata: {"kata", "tasks", "passed", "tally"}, printed as it goes."""
    results = []
    for item in current["plan"]:
        kata = find_kata(item["kata"])
        print(paint(f"grading kata {kata.number}...", "dim"), flush=True)
        records = grade_scratch(SCRATCH.parent / current["folder"], kata, item["tests"])
        ok = passed(records)
        results.append({"kata": kata.name, "tasks": item["tasks"], "passed": ok, "tally": tally(records)})
        mark = paint("pass", "green") if ok else paint("not yet", "yellow")
        print(f"  kata {kata.number}: {mark} ({tally(records)})")
        first = failures(records)[0] if failures(records) else None
        if first and not ok:
            print(f"    {first['name']}: {first['message']}")
    return results


def finish(current: dict[str, Any]) -> int:
    results = grade_plan(current)
    elapsed = now() - datetime.fromisoformat(current["started"])
    used = min(current["minutes"], math.ceil(elapsed.total_seconds() / 60))
    record = {"started": current["started"], "minutes": current["minutes"], "used": used, "results": results}

    def change(section: dict[str, Any]) -> None:
        section.setdefault("history", []).append(record)
        section.pop("current", None)

    update_section("mock", change)
    done = sum(r["passed"] for r in results)
    summary = f"{done}/{len(results)} passed in {used} of {current['minutes']} min"
    print(paint(f"mock interview over: {summary}", "bold"))
    print("now answer each question out loud, then read the model answers:")
    for item in current["plan"]:
        print()
        try:
            explain(find_kata(item["kata"]))
        except AnswersMissing as error:
            print(str(error))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="mock", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--minutes", type=int, help=f"start a mock this long (default {DEFAULT_MINUTES})")
    group.add_argument("--grade", action="store_true", help="grade now; after the time is up, finish")
    group.add_argument("--finish", action="store_true", help="grade, save the result, show the answers")
    group.add_argument("--status", action="store_true", help="the tasks and the time left")
    group.add_argument("--abandon", action="store_true", help="end the mock without a result")
    args = parser.parse_args(argv)
    current = read_section("mock").get("current")
    try:
        if args.grade or args.finish or args.status or args.abandon:
            if not current:
                return fail("no mock interview running: start one with `nox -s mock -- --minutes 45`", 1)
            if args.abandon:
                update_section("mock", lambda section: section.pop("current", None))
                print(f"abandoned; your answers stay in {current['folder']}")
                return 0
            if args.status:
                show_plan(current)
                print(clock(current))
                return 0
            if args.finish or time_left(current) <= timedelta(0):
                return finish(current)
            grade_plan(current)
            print(clock(current))
            return 0
        if current:
            print(f"a mock interview is running ({clock(current)}):")
            show_plan(current)
            print("grade: nox -s mock -- --grade   finish: -- --finish   give up: -- --abandon")
            return 0
        minutes = args.minutes if args.minutes is not None else DEFAULT_MINUTES
        if minutes < 5:
            return fail("a mock interview needs at least 5 minutes", 2)
        return start(minutes)
    except GradingUnavailable as error:
        return fail(str(error), 1)
    except BrokenPipeError:  # e.g. `--list | head`
        raise
    except OSError as error:
        return fail(f"cannot save the mock interview to the progress file: {error}", 1)


if __name__ == "__main__":
    sys.exit(main())
