"""pytest plugin that ends a run with the learner's scoreboard, saved progress and machine-readable results.

Options
-------
``--kata-json PATH``
    Write one record per test (kata, name, outcome, message, duration) as JSON to PATH.
``--problem-lines``
    End with one ``FILE:LINE: error: TEST: MESSAGE`` line per failing test, for editors' problem matchers.
``--progress-file PATH``
    Where the saved progress lives. Default: ``.katas-progress.json`` at the repo root, used only by
    runs that grade ``katas/`` (grading ``solutions/`` must not overwrite a learner's progress).
``--no-progress``
    Neither read nor update the saved progress.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from kata_harness.catalog import KataInfo, all_katas, kata_of_test_file
from kata_harness.grading import BROKEN, NOT_STARTED
from kata_harness.source import DEFAULT_SOURCE, REPO_ROOT, kata_number, source_dir

PROGRESS_FILE = REPO_ROOT / ".katas-progress.json"
DONE, IN_PROGRESS = "done", "in progress"
NOT_RUN = "not run"  # collected, but the run stopped first (-x, Ctrl-C)
STATUS_COLOURS = {DONE: "green", IN_PROGRESS: "yellow", NOT_STARTED: "white", BROKEN: "red"}


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
    def status(self) -> str:
        outcomes = {r.outcome for r in self.failures}
        if BROKEN in outcomes:
            return BROKEN
        if not outcomes:
            return DONE
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
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


class Scoreboard:
    """Collects every test report, then draws the table, the totals and the "next" line."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.scores: dict[str, KataScore] = {}
        self.results: dict[str, TestResult] = {}
        self.previous = self._load_progress()  # read before this run overwrites it

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:  # after -k / -m deselection
            kata = kata_of_test_file(item.path)
            if kata is None:
                continue
            result = TestResult(kata=kata, name=item.name, nodeid=item.nodeid, outcome=NOT_RUN)
            self.scores.setdefault(kata, KataScore(kata)).results.append(result)
            self.results[item.nodeid] = result

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = self.results.get(report.nodeid)
        if result is None:
            return
        result.duration += report.duration
        # Names accumulate over a test's phases, so the latest report holds them all.
        result.names = getattr(report, "kata_names", result.names)
        if result.outcome == NOT_RUN and report.when == "setup":
            result.outcome = "passed"
        if report.skipped and result.outcome == "passed":
            result.outcome, result.message = "skipped", _skip_reason(report)
        elif report.failed and result.outcome in ("passed", "skipped"):
            result.outcome = getattr(report, "kata_verdict", "failed")
            if report.when == "teardown" and result.outcome == "failed":
                result.outcome = "error"
            result.message = _one_line(report)
            path, line, _ = report.location
            result.location = getattr(report, "kata_location", None) or f"{path}:{(line or 0) + 1}"

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.scores or self.config.option.collectonly:
            return
        katas = {kata.name: kata for kata in all_katas()}
        tr = terminalreporter
        tr.write_sep("=", "kata scoreboard", bold=True)
        tr.write_line(f" {'#':<3} {'kata':<44} {'tests':>7}   {'status':<12} last run")
        for name in sorted(self.scores):
            score = self.scores[name]
            info = katas.get(name)
            title = info.title if info else name
            tests = f"{score.passed}/{score.graded}"
            last = self.previous.get(name, "")
            row = f" {name[1:3]:<3} {title[:44]:<44} {tests:>7}   {score.status:<12} {last}"
            tr.write_line(row, **{STATUS_COLOURS[score.status]: True})
            if score.status == BROKEN:
                tr.write_line(f"     {score.failures[0].message}", red=True)
        self._write_totals(tr, katas)
        if self.config.getoption("problem_lines"):
            for score in self.scores.values():
                for failure in score.failures:
                    tr.write_line(f"{failure.location}: error: {failure.name}: {failure.message}")

    def _write_totals(self, tr: pytest.TerminalReporter, katas: dict[str, KataInfo]) -> None:
        previous = self.previous
        scores = [self.scores[name] for name in sorted(self.scores)]
        done = sum(score.status == DONE for score in scores)
        passed = sum(score.passed for score in scores)
        graded = sum(score.graded for score in scores)
        tr.write_line(f"katas done: {done}/{len(scores)}   tests passed: {passed}/{graded}", bold=True)
        newly_done = [s.name[:3] for s in scores if s.status == DONE and previous.get(s.name, DONE) != DONE]
        regressed = [
            s.name[:3]
            for s in scores
            if (previous.get(s.name) == DONE and s.status != DONE)
            or (s.status == BROKEN and previous.get(s.name, BROKEN) != BROKEN)
        ]
        if newly_done:
            tr.write_line(f"newly done since last run: {', '.join(newly_done)}", green=True)
        if regressed:
            tr.write_line(f"newly broken since last run: {', '.join(regressed)}", red=True)
        unfinished = next((s for s in scores if s.status != DONE), None)
        if unfinished is None:
            number = kata_number(scores[0].name) if len(scores) == 1 else "N"
            tr.write_line(f"every graded kata passes - see the reference: nox -s compare -- {number}")
            later = [k for k in katas.values() if k.name not in self.scores and previous.get(k.name) != DONE]
            if later:
                number = kata_number(later[0].name)
                tr.write_line(f"next: kata {number} ({later[0].title}): nox -s check -- {number}", bold=True)
            return
        number = kata_number(unfinished.name)
        first = next(iter(unfinished.failures), None)
        title = katas[unfinished.name].title if unfinished.name in katas else unfinished.name
        if first is None:  # nothing failed, but nothing ran either (e.g. -x stopped the run)
            tr.write_line(f"next: kata {number} ({title}): run `nox -s check -- {number}`", bold=True)
            return
        tr.write_line(f"next: kata {number} ({title}) - {first.name}", bold=True)
        tr.write_line(f"      {first.message}")
        if " is missing - " in first.message:  # the message already names the reset command
            return
        tr.write_line(f"      edit {first.location} - stuck? nox -s hint -- {number}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        results = [asdict(result) for score in self.scores.values() for result in score.results]
        path = self.config.getoption("kata_json")
        if path:
            Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        progress_file = self._progress_file()
        if self.scores and progress_file:
            progress = {**self.previous, **{k: s.status for k, s in self.scores.items()}}
            progress_file.write_text(json.dumps(progress, indent=2, sort_keys=True) + "\n", encoding="utf-8")

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
            return dict(json.loads(path.read_text(encoding="utf-8"))) if path else {}
        except (OSError, ValueError):
            return {}


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr or "")
    return reason.removeprefix("Skipped: ")
