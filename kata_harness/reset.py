"""Put a kata's pristine stub back, after copying the learner's file to a timestamped backup.

Usage: ``python -m kata_harness.reset KATA [KATA ...]`` (``nox -s reset -- 4``). The stub is generated
from the reference solution, not taken from git history; the learner's file goes to
``.katas-backup/<kata>-<YYYYmmdd-HHMMSS>.py`` first, so nothing written is ever lost. Resetting always
names its katas: there is no "reset everything".
"""

from __future__ import annotations

import shutil
import sys
from datetime import datetime
from pathlib import Path

from kata_harness.catalog import KataInfo
from kata_harness.source import display_path
from kata_harness.stubgen import make_stub
from kata_harness.workflow import BACKUPS, OneLineParser, fail, learner_file, paint, select

REFUSAL = "say which kata to reset, e.g. `nox -s reset -- 4`; reset never resets every kata at once"


def backup_path(kata: KataInfo, now: datetime | None = None) -> Path:
    """A new file in .katas-backup/ named after the kata and the time, never one that exists already."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    path = BACKUPS / f"{kata.name}-{stamp}.py"
    count = 1
    while path.exists():  # two resets within a second keep both backups
        count += 1
        path = BACKUPS / f"{kata.name}-{stamp}-{count}.py"
    return path


def reset(kata: KataInfo) -> str:
    """Back up the learner's file if it holds anything but the stub, write the stub; returns what happened."""
    target = learner_file(kata)
    stub = make_stub(kata.solution.read_text(encoding="utf-8"))
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(stub, encoding="utf-8")
        return f"{display_path(target)} was missing: wrote the pristine stub (nothing to back up)"
    if target.read_text(encoding="utf-8", errors="replace") == stub:
        return f"{display_path(target)} is already the pristine stub: nothing to do"
    backup = backup_path(kata)
    backup.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(target, backup)  # first the copy; only a finished copy lets the stub overwrite anything
    target.write_text(stub, encoding="utf-8")
    where = display_path(target)
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
