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
replaced. A mutant is *killed* when at least one of the kata's tests fails on it. A mutant that no longer
imports (a syntax error, a missing name) proves nothing and is reported as invalid; a mutant no test can
kill is either equivalent to the reference (delete it) or a hole in the contract (state it, test it).

Usage: ``python -m kata_harness.mutants [KATA ...] [--jobs N]`` (``nox -s mutants``). Prints one line per
mutant and ``K/N killed``; exits non-zero unless every mutant is killed and every kata has at least
``MIN_MUTANTS`` of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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

    @property
    def label(self) -> str:
        return f"{self.kata.name[:3]} #{self.index}"

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
    """The kata's mutants in file order; none when it has no mutants file."""
    path = mutants_file(kata)
    if not path.exists():
        return []
    tables = tomllib.loads(path.read_text(encoding="utf-8")).get("mutant", [])
    return [
        Mutant(kata, index, table["bug"].strip(), table["find"], table["replace"])
        for index, table in enumerate(tables, start=1)
    ]


def run_mutant(mutant: Mutant, python: str = sys.executable) -> tuple[bool, str]:
    """(killed, what happened in one line): grade the mutant with the kata's tests, stopping at the first
    failure."""
    try:
        source = mutant.source()
        compile(source, mutant.kata.solution.name, "exec")
    except (ValueError, SyntaxError) as error:
        return False, f"INVALID: {error}"
    with tempfile.TemporaryDirectory(prefix="katas-mutant-") as tmp:
        (Path(tmp) / mutant.kata.solution.name).write_text(source, encoding="utf-8")
        results = Path(tmp) / "results.json"
        command = [
            python, "-m", "pytest", "-q", "-x", "--tb=no", "-p", "no:randomly", "-p", "no:cacheprovider",
            "--no-progress", "--kata-json", str(results), str(mutant.kata.test_file),
        ]  # fmt: skip
        env = {**os.environ, SOURCE_ENV: tmp}
        try:
            subprocess.run(
                command, cwd=REPO_ROOT, env=env, capture_output=True, timeout=MUTANT_TIME_LIMIT, check=False
            )
        except subprocess.TimeoutExpired:
            return False, f"INVALID: the run took over {MUTANT_TIME_LIMIT} s"
        if not results.exists():
            return False, "INVALID: the run wrote no results"
        records = json.loads(results.read_text(encoding="utf-8"))
    failed = [r for r in records if r["outcome"] not in PASSING]
    if not failed:
        return False, "SURVIVED: every test passes"
    first = failed[0]
    if first["outcome"] == "broken":
        return False, f"INVALID: the mutant does not import: {first['message']}"
    return True, f"killed by {first['name']}"


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
    mutants = [mutant for kata in katas for mutant in load_mutants(kata)]
    killed = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for mutant, (was_killed, outcome) in zip(mutants, pool.map(run_mutant, mutants), strict=True):
            killed += was_killed
            print(f"{mutant.label:<8} {outcome:<55} {mutant.bug}", flush=True)
    for problem in problems:
        print(problem)
    print(f"{killed}/{len(mutants)} killed")
    return 0 if killed == len(mutants) and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
