"""Put a kata's pristine stub back, after copying the learner's file to a timestamped backup.

Usage: ``python -m kata_harness.reset KATA [KATA ...]`` (``nox -s reset -- 4``). The stub is generated
from the reference solution, not taken from git history; the learner's file goes to
``.katas-backup/<kata>-<YYYYmmdd-HHMMSS>.py`` first, so nothing written is ever lost. Resetting always
names its katas: there is no "reset everything".
"""

from __future__ import annotations

import contextlib
import sys

from kata_harness.catalog import KataInfo
from kata_harness.progress import NOT_STARTED, update_progress
from kata_harness.source import display_path
from kata_harness.stubgen import write_stub
from kata_harness.workflow import OneLineParser, fail, learner_file, paint, select

REFUSAL = "say which kata to reset, e.g. `nox -s reset -- 4`; reset never resets every kata at once"


def reset(kata: KataInfo) -> str:
    """Back up the learner's file if it holds anything but the stub, write the stub; returns what happened."""
    target = learner_file(kata)
    existed = target.exists()
    backup = write_stub(kata.solution, target)
    with contextlib.suppress(OSError):  # the next check must not call the fresh stub "newly broken"
        update_progress({kata.name: NOT_STARTED})
    where = display_path(target)
    if not existed:
        return f"{where} was missing: wrote the pristine stub (nothing to back up)"
    if backup is None:
        return f"{where} is already the pristine stub: nothing to do"
    return f"backed up {where} to {display_path(backup)}\n{where} is the pristine stub again"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="reset", description=__doc__.splitlines()[0])
    parser.add_argument("katas", nargs="*", help='the katas: "4", "k04" or "k04_autograd"')
    args = parser.parse_args(argv)
    if not args.katas:
        return fail(REFUSAL, 2)
    katas = list(dict.fromkeys(select(selector) for selector in args.katas))  # all valid before any reset
    for kata in katas:
        for line in reset(kata).splitlines():
            print(paint(line, "green") if line.startswith("backed up") else line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
