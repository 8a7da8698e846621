"""The learner's saved progress (kata name -> status): read forgivingly, updated atomically under a lock."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kata_harness.source import REPO_ROOT

PROGRESS_FILE = REPO_ROOT / ".katas-progress.json"
# The statuses a kata can have; the verdicts "not started" and "broken" also label single tests.
DONE, IN_PROGRESS, NOT_STARTED, BROKEN = "done", "in progress", "not started", "broken"
# Entries beside the statuses, each a table its own command owns: the drill's Leitner boxes, mock interviews.
SECTIONS = ("drill", "mock")


class ProgressUnreadable(Exception):
    """The progress file exists but holds no kata -> status table; the message says what to do."""


def _read_file(path: Path) -> dict[str, Any]:
    """The whole saved table; {} when there is no file. Raises ProgressUnreadable for anything else odd."""
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
    if not isinstance(data, dict) or not all(
        isinstance(value, dict if key in SECTIONS else str) for key, value in data.items()
    ):
        raise ProgressUnreadable(
            f"{path.name} does not hold a kata -> status table; it was ignored (delete it to start afresh)"
        )
    return data


def read_progress(path: Path = PROGRESS_FILE) -> dict[str, str]:
    """The saved statuses; {} when there is no file. Raises ProgressUnreadable for anything else odd."""
    return {key: value for key, value in _read_file(path).items() if key not in SECTIONS}


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
    if statuses:
        _update(lambda progress: progress.update(statuses), path)


def read_section(name: str, path: Path = PROGRESS_FILE) -> dict[str, Any]:
    """One command's table (see SECTIONS); {} when it has none yet or the file is unreadable."""
    try:
        return _read_file(path).get(name, {})
    except ProgressUnreadable:
        return {}


def update_section(name: str, change: Callable[[dict[str, Any]], None], path: Path = PROGRESS_FILE) -> None:
    """Apply `change` to one command's table as it is on disk now, under the lock. Raises OSError."""
    _update(lambda progress: change(progress.setdefault(name, {})), path)


def _update(change: Callable[[dict[str, Any]], None], path: Path) -> None:
    with _locked(path):
        try:
            progress = _read_file(path)
        except ProgressUnreadable:
            progress = {}
        change(progress)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(json.dumps(progress, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
