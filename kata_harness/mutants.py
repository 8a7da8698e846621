"""Prove each grader rejects wrong code: every learner-bug mutant of a reference must fail its kata's tests.

A kata's mutants live in ``tests/mutants/kNN_slug.toml``, one table per bug, each a small edit of the
reference solution::

    [[mutant]]
    bug = "zeroes the gradients after the step, so stale gradients reach the first update"
    find = '''
            optimizer.step()
            optimizer.zero_grad()'''
    replace = '''
            optimizer.zero_grad()
            optimizer.step()'''

``find`` must occur exactly once in ``solutions/kNN_slug.py``; the mutant is the reference with that text
replaced. A mutant is *killed* when at least one of the kata's tests fails on it.

A bug hunt (a kata whose title starts "Bug hunt") lists its planted bugs as ``[[planted]]`` tables with the
same keys plus ``test``, the one test that names the bug's symptom. The file learners get is the reference
with every planted bug in it (``shipped_source``); each planted bug alone is a mutant, killed only when
``test`` fails and every other test passes, which proves the bugs independent and one test per bug.

A mutant that no longer imports (a syntax error, a missing name) proves nothing and is reported as invalid;
a mutant no test can kill is either equivalent to the reference (delete it) or a hole in the contract
(state it, test it).

Usage: ``python -m kata_harness.mutants [KATA ...] [--jobs N]`` (``nox -s mutants``). Prints one line per
mutant and ``K/N killed``; exits non-zero unless every mutant is killed and every kata has at least
``MIN_MUTANTS`` of them.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: nox itself depends on tomli there
    import tomli as tomllib  # type: ignore[no-redef]

from kata_harness.catalog import KataInfo, UnknownKata, all_katas, find_kata
from kata_harness.source import REPO_ROOT, SOURCE_ENV

MUTANTS = REPO_ROOT / "tests" / "mutants"
MIN_MUTANTS = 8
MIN_PLANTED, MAX_PLANTED = 5, 8
MUTANT_TIME_LIMIT = 300  # seconds for one mutant's whole run; the graders' own timeouts come first
PASSING = ("passed", "skipped")


@dataclass(frozen=True)
class Mutant:
    """One learner bug: `kata` with `find` replaced by `replace` in its reference."""

    kata: KataInfo
    index: int
    bug: str
    find: str
    replace: str
    test: str = ""  # a planted bug's own test; "" for an ordinary mutant

    @property
    def label(self) -> str:
        return f"{self.kata.name[:3]} {'P' if self.test else '#'}{self.index}"

    def source(self) -> str:
        """The mutated reference; raises ValueError when `find` does not occur exactly once."""
        text = self.kata.solution.read_text(encoding="utf-8")
        count = text.count(self.find)
        if count != 1:
            raise ValueError(f"`find` occurs {count} times in {self.kata.solution.name} (needs exactly 1)")
        return text.replace(self.find, self.replace)


def mutants_file(kata: KataInfo) -> Path:
    return MUTANTS / f"{kata.name}.toml"


def load_mutants(kata: KataInfo) -> list[Mutant]:
    """The kata's planted bugs, then its other mutants, in file order; none when it has no mutants file."""
    path = mutants_file(kata)
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    planted = [
        Mutant(kata, index, table["bug"].strip(), table["find"], table["replace"], table["test"])
        for index, table in enumerate(data.get("planted", []), start=1)
    ]
    return planted + [
        Mutant(kata, index, table["bug"].strip(), table["find"], table["replace"])
        for index, table in enumerate(data.get("mutant", []), start=1)
    ]


def planted_bugs(kata: KataInfo) -> list[Mutant]:
    return [mutant for mutant in load_mutants(kata) if mutant.test]


def shipped_source(kata: KataInfo, reference: str) -> str:
    """A bug hunt's learner file: `reference` with every planted bug in it. Raises ValueError when a
    planted bug's `find` does not occur exactly once or two of them overlap."""
    spans = []
    for bug in planted_bugs(kata):
        count = reference.count(bug.find)
        if count != 1:
            raise ValueError(f"planted bug {bug.index}: `find` occurs {count} times (needs exactly 1)")
        start = reference.index(bug.find)
        spans.append((start, start + len(bug.find), bug.replace))
    spans.sort()
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        if start < end:
            raise ValueError("two planted bugs edit overlapping text")
    for start, end, replace in reversed(spans):
        reference = reference[:start] + replace + reference[end:]
    return reference


def _prepare(mutant: Mutant, folder: Path) -> str | None:
    """Write the mutant into `folder` as the kata's file; returns why it is invalid, if it is."""
    try:
        source = mutant.source()
        compile(source, mutant.kata.solution.name, "exec")
    except (ValueError, SyntaxError) as error:
        return f"INVALID: {error}"
    (folder / mutant.kata.solution.name).write_text(source, encoding="utf-8")
    return None


def _pytest_args(mutant: Mutant, results: Path) -> list[str]:
    stop_early = [] if mutant.test else ["-x"]  # a planted bug must fail its own test and no other
    return [
        "-q", *stop_early, "--tb=no", "-p", "no:randomly", "-p", "no:cacheprovider", "--no-progress",
        "--kata-json", str(results), str(mutant.kata.test_file),
    ]  # fmt: skip


def _verdict(results: Path, mutant: Mutant) -> tuple[bool, str]:
    if not results.exists():
        return False, "INVALID: the run wrote no results"
    records = json.loads(results.read_text(encoding="utf-8"))
    failed = [r for r in records if r["outcome"] not in PASSING]
    if not failed:
        return False, "SURVIVED: every test passes"
    first = failed[0]
    if first["outcome"] == "broken":
        return False, f"INVALID: the mutant does not import: {first['message']}"
    if first["outcome"] == "not run":  # an internal error, or a test that never finished: proves nothing
        return False, f"INVALID: the run stopped before {first['name']} finished"
    names = [r["name"] for r in failed]
    if mutant.test and names != [mutant.test]:
        return False, f"NOT ITS OWN: fails {', '.join(names)}; only {mutant.test} should"
    return True, f"killed by {first['name']}"


def run_mutant(mutant: Mutant, python: str = sys.executable) -> tuple[bool, str]:
    """(killed, what happened in one line): grade the mutant with the kata's tests in a fresh interpreter,
    stopping at the first failure."""
    with tempfile.TemporaryDirectory(prefix="katas-mutant-") as tmp:
        invalid = _prepare(mutant, Path(tmp))
        if invalid:
            return False, invalid
        results = Path(tmp) / "results.json"
        command = [python, "-m", "pytest", *_pytest_args(mutant, results)]
        env = {**os.environ, SOURCE_ENV: tmp}
        try:
            subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, timeout=MUTANT_TIME_LIMIT)
        except subprocess.TimeoutExpired:
            return False, f"INVALID: the run took over {MUTANT_TIME_LIMIT} s"
        return _verdict(results, mutant)


def run_mutants_forked(mutants: list[Mutant], jobs: int) -> Iterator[tuple[Mutant, tuple[bool, str]]]:
    """Grade the mutants `jobs` at a time, each in a child forked from this process once it has imported
    torch and pytest: the children skip the seconds an import costs. Yields results as they finish."""
    import pytest
    import torch

    # torch imported and its meta kernels loaded once here, inherited by every child. (Not through
    # kata_harness.isolation: a plugin module imported before pytest.main cannot have its asserts rewritten.)
    (torch.empty(2, device="meta") + 1).sum()

    waiting = list(mutants)
    running: dict[int, tuple[Mutant, Path, float]] = {}
    with tempfile.TemporaryDirectory(prefix="katas-mutants-") as tmp:
        while waiting or running:
            while waiting and len(running) < jobs:
                mutant = waiting.pop(0)
                folder = Path(tmp) / str(len(waiting))
                folder.mkdir()
                invalid = _prepare(mutant, folder)
                if invalid:
                    yield mutant, (False, invalid)
                    continue
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child
                    os.setpgid(0, 0)
                    os.environ[SOURCE_ENV] = str(folder)
                    os.chdir(REPO_ROOT)
                    devnull = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(devnull, fd)
                    code = 3  # pytest's "internal error", should pytest.main itself raise
                    try:
                        code = int(pytest.main(_pytest_args(mutant, folder / "results.json")))
                    finally:
                        os._exit(code)
                running[pid] = (mutant, folder, time.monotonic() + MUTANT_TIME_LIMIT)
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                for late, (mutant, _, deadline) in list(running.items()):
                    if time.monotonic() > deadline:
                        os.killpg(late, signal.SIGKILL)
                        os.waitpid(late, 0)
                        del running[late]
                        yield mutant, (False, f"INVALID: the run took over {MUTANT_TIME_LIMIT} s")
                time.sleep(0.05)
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # anything the mutant left running
            mutant, folder, _ = running.pop(pid)
            yield mutant, _verdict(folder / "results.json", mutant)


def problems_with_planted(kata: KataInfo) -> list[str]:
    """A bug hunt has 5 to 8 planted bugs, one test each and no test without one; other katas have none."""
    planted = planted_bugs(kata)
    if not kata.bug_hunt:
        return [f"{kata.name}: planted bugs, but its title does not start 'Bug hunt'"] if planted else []
    tests = [bug.test for bug in planted]
    problems = []
    if not MIN_PLANTED <= len(planted) <= MAX_PLANTED:
        problems.append(f"{kata.name}: {len(planted)} planted bugs (needs {MIN_PLANTED}-{MAX_PLANTED})")
    if sorted(tests) != sorted(kata.tasks):
        problems.append(f"{kata.name}: planted bugs name tests {tests}, its grader has {list(kata.tasks)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("katas", nargs="*", help="kata numbers or names (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants graded at once")
    args = parser.parse_args(argv)
    try:
        katas = [find_kata(name) for name in args.katas] if args.katas else list(all_katas())
    except UnknownKata as error:
        parser.error(str(error))
    problems = [
        f"{kata.name}: {len(load_mutants(kata))} mutants in tests/mutants/{kata.name}.toml "
        f"(needs at least {MIN_MUTANTS})"
        for kata in katas
        if len(load_mutants(kata)) < MIN_MUTANTS
    ]
    problems += [problem for kata in katas for problem in problems_with_planted(kata)]
    mutants = [mutant for kata in katas for mutant in load_mutants(kata)]
    jobs = max(1, args.jobs)
    if hasattr(os, "fork") and sys.platform.startswith("linux"):
        graded = run_mutants_forked(mutants, jobs)
    else:
        pool = ThreadPoolExecutor(max_workers=jobs)
        graded = zip(mutants, pool.map(run_mutant, mutants), strict=True)
    killed = 0
    for mutant, (was_killed, outcome) in graded:
        killed += was_killed
        print(f"{mutant.label:<8} {outcome:<55} {mutant.bug}", flush=True)
    for problem in problems:
        print(problem)
    print(f"{killed}/{len(mutants)} killed")
    return 0 if killed == len(mutants) and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
