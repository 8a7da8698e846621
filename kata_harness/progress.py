"""The learner's saved progress (kata name -> status): read forgivingly, updated atomically under a lock."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kata_harness.source import REPO_ROOT

PROGRESS_FILE = REPO_ROOT / ".katas-progress.json"
# The statuses a kata can have; the verdicts "not started" and "broken" also label single tests.
DONE, IN_PROGRESS, NOT_STARTED, BROKEN = "done", "in progress", "not started", "broken"


class ProgressUnreadable(Exception):
    """The progress file exists but holds no kata -> status table; the message says what to do."""


def read_progress(path: Path = PROGRESS_FILE) -> dict[str, str]:
    """The saved statuses; {} when there is no file. Raises ProgressUnreadable for anything else odd."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise ProgressUnreadable(f"cannot read {path.name} ({error}); delete it to start afresh") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ProgressUnreadable(
            f"{path.name} does not hold a kata -> status table; it was ignored (delete it to start afresh)"
        )
    return data


def read_progress_or_empty(path: Path = PROGRESS_FILE) -> dict[str, str]:
    """The saved statuses, or {} where the file is missing or unreadable."""
    try:
        return read_progress(path)
    except ProgressUnreadable:
        return {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside `path`, so two runs finishing together do not lose an update."""
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+b") as lock:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            msvcrt.locking(lock.fileno(), msvcrt.LK_LOCK, 1)
        else:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield


def update_progress(statuses: dict[str, str], path: Path = PROGRESS_FILE) -> None:
    """Merge `statuses` into the saved progress, as it is on disk now. Raises OSError when it cannot."""
    if not statuses:
        return
    with _locked(path):
        progress = {**read_progress_or_empty(path), **statuses}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(json.dumps(progress, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
