"""pytest plugin that ends a run with the learner's scoreboard, saved progress and machine-readable results.

Options
-------
``--kata-json PATH``
    Write one record per test (kata, name, outcome, message, duration) as JSON to PATH.
``--problem-lines``
    End with one ``FILE:LINE: error: TEST: MESSAGE`` line per failing test, for editors' problem matchers.
``--progress-file PATH``
    Where the saved progress lives. Default: ``.katas-progress.json`` at the repo root, used only by
    runs that grade ``katas/`` (grading ``solutions/`` must not overwrite a learner's progress). A run
    saves the status of a kata only when it graded every one of the kata's tests: not after ``-k``, a
    test id, ``-x`` or Ctrl-C stopped short, or ``--collect-only``.
``--no-progress``
    Neither read nor update the saved progress.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from kata_harness.catalog import KataInfo, all_katas, kata_of_test_file
from kata_harness.progress import (
    BROKEN,
    DONE,
    IN_PROGRESS,
    NOT_STARTED,
    PROGRESS_FILE,
    ProgressUnreadable,
    read_progress,
    update_progress,
)
from kata_harness.source import DEFAULT_SOURCE, REPO_ROOT, kata_number, source_dir

NOT_RUN = "not run"  # collected, but the run stopped before the test finished (-x, Ctrl-C)
NOT_GRADED = "not graded"  # a kata none of whose tests ran to the end (all skipped, or the run stopped)
PART_PASSES = "part passes"  # every test this run selected passed, but it selected only some (-k, a test id)
STATUS_COLOURS = {
    DONE: "green",
    IN_PROGRESS: "yellow",
    NOT_STARTED: "white",
    BROKEN: "red",
    NOT_GRADED: "white",
    PART_PASSES: "white",
}
LIKELY_CAUSE = "Likely cause:"


@dataclass
class TestResult:
    """One test's outcome across its setup, call and teardown phases."""

    kata: str
    name: str
    nodeid: str
    outcome: str = "passed"
    message: str = ""
    duration: float = 0.0
    location: str = ""  # where to edit: learner file:line when known, else the test's own line
    names: list[str] = field(default_factory=list)  # the kata's public names this test used


@dataclass
class KataScore:
    """The results of one kata's tests, in collection order."""

    name: str
    results: list[TestResult] = field(default_factory=list)
    whole: bool = True  # the run selected every test of the kata

    @property
    def passed(self) -> int:
        return sum(r.outcome == "passed" for r in self.results)

    @property
    def graded(self) -> int:
        return sum(r.outcome not in ("skipped", NOT_RUN) for r in self.results)

    @property
    def failures(self) -> list[TestResult]:
        return [r for r in self.results if r.outcome not in ("passed", "skipped", NOT_RUN)]

    @property
    def complete(self) -> bool:
        """Every selected test ran to its end."""
        return all(r.outcome != NOT_RUN for r in self.results)

    @property
    def fully_graded(self) -> bool:
        """Every test of the kata ran to its end: only then may its status be saved."""
        return self.whole and self.complete

    @property
    def status(self) -> str:
        outcomes = {r.outcome for r in self.failures}
        if BROKEN in outcomes:
            return BROKEN
        if not outcomes:
            if not (self.complete and self.graded):
                return NOT_GRADED
            return DONE if self.whole else PART_PASSES
        if self.passed == 0 and outcomes == {NOT_STARTED}:
            return NOT_STARTED
        return IN_PROGRESS


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("katas", "kata scoreboard")
    group.addoption("--kata-json", metavar="PATH", help="write per-test results as JSON to PATH")
    group.addoption("--problem-lines", action="store_true", help="end with FILE:LINE: error: lines")
    group.addoption("--progress-file", metavar="PATH", help="saved progress (default .katas-progress.json)")
    group.addoption("--no-progress", action="store_true", help="do not read or save the saved progress")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(Scoreboard(config), "kata-scoreboard")


def _one_line(report: pytest.TestReport) -> str:
    """The failure's first line, and its "Likely cause:" line where it has one, as one line."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    cause = next((line for line in lines[1:] if line.startswith(LIKELY_CAUSE)), None)
    return f"{lines[0]} {cause}" if cause else lines[0]


class Scoreboard:
    """Collects every test report, then draws the table, the totals and the "next" line."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.scores: dict[str, KataScore] = {}
        self.results: dict[str, TestResult] = {}
        self.partly_selected: set[str] = set()  # katas some of whose tests this run left out
        self.notices: list[str] = []  # one-line problems with saved files, shown under the scoreboard
        self.previous = self._load_progress()  # read before this run overwrites it

    def pytest_deselected(self, items: list[pytest.Item]) -> None:  # -k, -m, --lf
        self.partly_selected.update(filter(None, (kata_of_test_file(item.path) for item in items)))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for arg in self.config.args:  # a test id selects part of its file
            if "::" in arg:
                self.partly_selected.add(kata_of_test_file(arg.split("::")[0]) or "")
        for item in session.items:  # after -k / -m deselection
            kata = kata_of_test_file(item.path)
            if kata is None:
                continue
            result = TestResult(kata=kata, name=item.name, nodeid=item.nodeid, outcome=NOT_RUN)
            score = self.scores.setdefault(kata, KataScore(kata, whole=kata not in self.partly_selected))
            score.results.append(result)
            self.results[item.nodeid] = result

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = self.results.get(report.nodeid)
        if result is None:
            return
        result.duration += report.duration
        # Names accumulate over a test's phases, so the latest report holds them all.
        result.names = getattr(report, "kata_names", result.names)
        if report.skipped and result.outcome == NOT_RUN:
            result.outcome, result.message = "skipped", _skip_reason(report)
        elif report.failed and result.outcome in (NOT_RUN, "skipped"):
            result.outcome = getattr(report, "kata_verdict", "failed")
            if report.when == "teardown" and result.outcome == "failed":
                result.outcome = "error"
            result.message = _one_line(report)
            path, line, _ = report.location
            result.location = getattr(report, "kata_location", None) or f"{path}:{(line or 0) + 1}"
        elif report.when == "teardown" and result.outcome == NOT_RUN:
            result.outcome = "passed"  # only a test that ran to its end has passed

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.scores or self.config.option.collectonly:
            return
        katas = {kata.name: kata for kata in all_katas()}
        tr = terminalreporter
        tr.write_sep("=", "kata scoreboard", bold=True)
        tr.write_line(
            f" {'#':<3} {'kata':<40} {'level':>5} {'min':>4} {'tests':>7}   {'status':<12} last run"
        )
        for name in sorted(self.scores):
            score = self.scores[name]
            info = katas.get(name)
            title = info.title if info else name
            tests = f"{score.passed}/{score.graded}"
            last = self.previous.get(name, "")
            level = f"{info.difficulty}/5" if info and info.difficulty else ""
            minutes = str(info.minutes) if info and info.minutes else ""
            row = f" {name[1:3]:<3} {title[:40]:<40} {level:>5} {minutes:>4} {tests:>7}   {score.status:<12}"
            row += f" {last}"
            tr.write_line(row, **{STATUS_COLOURS[score.status]: True})
            if score.status == BROKEN:
                tr.write_line(f"     {score.failures[0].message}", red=True)
            elif not score.fully_graded:
                tr.write_line("     part of the kata was graded: its saved status is unchanged")
            if info and info.bug_hunt and score.status != BROKEN:  # one test per planted bug
                tr.write_line(f"     bugs fixed: {score.passed} of {score.graded}")
        self._write_totals(tr, katas)
        for notice in self.notices:
            tr.write_line(notice, yellow=True)
        if self.config.getoption("problem_lines"):
            for score in self.scores.values():
                for failure in score.failures:
                    severity = "warning" if failure.outcome == NOT_STARTED else "error"
                    location = failure.location if _has_line(failure.location) else f"{failure.location}:1"
                    tr.write_line(f"{location}: {severity}: {failure.name}: {failure.message}")

    def _write_totals(self, tr: pytest.TerminalReporter, katas: dict[str, KataInfo]) -> None:
        previous = self.previous
        scores = [self.scores[name] for name in sorted(self.scores)]
        done = sum(score.status == DONE for score in scores)
        passed = sum(score.passed for score in scores)
        graded = sum(score.graded for score in scores)
        tr.write_line(f"katas done: {done}/{len(scores)}   tests passed: {passed}/{graded}", bold=True)
        graded = [s for s in scores if s.fully_graded]
        newly_done = [s.name[:3] for s in graded if s.status == DONE and previous.get(s.name, DONE) != DONE]
        regressed = [
            s.name[:3]
            for s in graded
            if (previous.get(s.name) == DONE and s.status != DONE)
            or (s.status == BROKEN and previous.get(s.name, BROKEN) != BROKEN)
        ]
        if newly_done:
            tr.write_line(f"newly done since last run: {', '.join(newly_done)}", green=True)
        if regressed:
            tr.write_line(f"newly broken since last run: {', '.join(regressed)}", red=True)
        unfinished = next((s for s in scores if s.status not in (DONE, PART_PASSES)), None)
        if unfinished is None and any(s.status == PART_PASSES for s in scores):
            number = kata_number(scores[0].name) if len(scores) == 1 else "N"
            tr.write_line(f"the selected tests pass - now grade the whole kata: nox -s check -- {number}")
            return
        if unfinished is None:
            number = kata_number(scores[0].name) if len(scores) == 1 else "N"
            tr.write_line(
                f"every graded kata passes - answer its questions out loud, then check: nox -s explain -- "
                f"{number}; see the reference: nox -s compare -- {number}"
            )
            done = {k.name for k in katas.values() if previous.get(k.name) == DONE}
            done |= {s.name for s in scores if s.status == DONE}
            numbers_done = {k.number for k in katas.values() if k.name in done}
            later = [k for k in katas.values() if k.name not in done]
            later.sort(key=lambda k: not set(k.after) <= numbers_done)  # ready ones first, in number order
            if later:
                number = kata_number(later[0].name)
                tr.write_line(f"next: kata {number} ({later[0].title}): nox -s check -- {number}", bold=True)
            return
        number = kata_number(unfinished.name)
        first = next(iter(unfinished.failures), None)
        title = katas[unfinished.name].title if unfinished.name in katas else unfinished.name
        if first is None:  # nothing failed, but the kata was not graded to the end (-x, Ctrl-C, skips)
            tr.write_line(f"next: kata {number} ({title}): run `nox -s check -- {number}`", bold=True)
            return
        tr.write_line(f"next: kata {number} ({title}) - {first.name}", bold=True)
        tr.write_line(f"      {first.message}")
        if " is missing" in first.message:  # the message already says how to bring the file back
            return
        tr.write_line(f"      edit {first.location} - stuck? nox -s hint -- {number}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        results = [asdict(result) for score in self.scores.values() for result in score.results]
        path = self.config.getoption("kata_json")
        if path:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
            except OSError as error:
                self.notices.append(f"could not write --kata-json {path}: {error}")
        progress_file = self._progress_file()
        if progress_file is None or self.config.option.collectonly:
            return
        graded = {
            name: score.status
            for name, score in self.scores.items()
            if score.fully_graded and score.status != NOT_GRADED
        }
        try:
            update_progress(graded, progress_file)
        except OSError as error:
            self.notices.append(f"could not save your progress to {progress_file}: {error}")

    def _progress_file(self) -> Path | None:
        if self.config.getoption("no_progress"):
            return None
        if self.config.getoption("progress_file"):
            return Path(self.config.getoption("progress_file"))
        grading_katas = source_dir().resolve() == (REPO_ROOT / DEFAULT_SOURCE).resolve()
        return PROGRESS_FILE if grading_katas else None

    def _load_progress(self) -> dict[str, str]:
        path = self._progress_file()
        try:
            return read_progress(path) if path else {}
        except ProgressUnreadable as error:
            self.notices.append(str(error))
            return {}


def _has_line(location: str) -> bool:
    return location.rpartition(":")[2].isdigit()


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr or "")
    return reason.removeprefix("Skipped: ")
