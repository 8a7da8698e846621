"""Judge a graded run's JSON results: the references must pass everything, pristine stubs must pass nothing.

Usage: ``python -m kata_harness.verify (solutions | alternatives | stubs) RESULTS.json``, where the results
come from ``--kata-json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pytest_cuda_marker import SKIP_REASON


def problems_with_solutions(results: list[dict]) -> list[str]:
    """Every test passes on the references; the only skips allowed are CUDA tests on a machine without one."""
    return [
        f"{r['kata']}::{r['name']} {r['outcome']} on a correct solution: {r['message']}"
        for r in results
        if r["outcome"] != "passed" and not (r["outcome"] == "skipped" and r["message"] == SKIP_REASON)
    ]


def problems_with_stubs(results: list[dict]) -> list[str]:
    """No test passes on an untouched stub: one that does cannot tell a learner's work from nothing."""
    return [
        f"{r['kata']}::{r['name']} passes on the untouched stub - it grades nothing"
        for r in results
        if r["outcome"] == "passed"
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("solutions", "alternatives", "stubs"):
        print(__doc__, file=sys.stderr)
        return 2
    results = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    if not results:
        print(f"no test results in {argv[1]}: nothing was graded", file=sys.stderr)
        return 1
    judge = problems_with_stubs if argv[0] == "stubs" else problems_with_solutions
    problems = judge(results)
    for problem in problems:
        print(problem)
    outcome = "FAILED" if problems else "ok"
    print(f"verify {argv[0]}: {outcome} ({len(results)} tests, {len(problems)} problems)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
