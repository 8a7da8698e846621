"""Re-grade each kata file as it is saved and redraw the scoreboard, until Ctrl-C.

Usage: ``python -m kata_harness.watch [KATA ...] [--poll] [--once]`` (``nox -s watch``). Katas named on
the command line are graded once at the start. Saves in the graded folder (``katas/``, or
``$KATA_SOURCE``) are debounced, and each batch grades the katas it touched with the same pytest run as
``nox -s check -- N``.

Native file events do not reach every folder: on WSL for files under ``/mnt/`` (the Windows drives), and
in containers whose folder is mounted from the host over a network or FUSE file system, the watcher polls
instead. ``--poll`` or ``WATCHFILES_FORCE_POLLING=1`` forces polling anywhere;
``WATCHFILES_FORCE_POLLING=0`` turns it off.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from kata_harness.catalog import KataInfo, all_katas
from kata_harness.source import REPO_ROOT, display_path, source_dir
from kata_harness.workflow import OneLineParser, paint, select

DEBOUNCE_MS = 1600  # the longest a burst of saves is gathered before grading
STEP_MS = 150  # a burst ends after this long without a change (editors write a file in several steps)
POLL_DELAY_MS = 300
READY_MS = 250  # an empty batch this soon after starting says the watcher is up: only then the banner
# File systems whose changes made on the other side (the host, Windows) raise no inotify events here.
REMOTE_FILESYSTEMS = {
    "9p", "drvfs", "virtiofs", "cifs", "smb3", "smbfs", "nfs", "nfs4", "vboxsf", "prl_fs", "osxfs",
    "fakeowner", "fuse.grpcfuse", "fuse.sshfs", "fuse.osxfs", "fuse.vmhgfs-fuse",
}  # fmt: skip

Grader = Callable[[list[KataInfo]], int]
Changes = Iterable[set[tuple[object, str]]]


def changed_katas(changes: set[tuple[object, str]], folder: Path) -> list[KataInfo]:
    """The katas whose files in `folder` a batch of (change, path) pairs touched, in number order.

    Saved, created and deleted files all count (a deleted kata is graded too, and reported missing);
    editor swap files, backups and anything outside `folder` do not.
    """
    all_katas.cache_clear()  # a kata added while watching is graded too
    names = {kata.name: kata for kata in all_katas()}
    root = folder.resolve()
    touched = {}
    for _, raw in changes:
        path = Path(raw)
        if path.suffix == ".py" and path.stem in names and path.parent.resolve() == root:
            touched[path.stem] = names[path.stem]
    return [touched[name] for name in sorted(touched)]


def check_command(katas: list[KataInfo]) -> list[str]:
    """The pytest run `nox -s check -- N` makes for these katas, with this interpreter."""
    return [sys.executable, "-m", "pytest", *(str(kata.test_file.relative_to(REPO_ROOT)) for kata in katas)]


def run_check(katas: list[KataInfo]) -> int:
    """Grade `katas` in a subprocess that prints straight to the terminal; returns pytest's exit code."""
    return subprocess.run(check_command(katas), cwd=REPO_ROOT).returncode


def clear_screen() -> None:
    if sys.stdout.isatty():
        sys.stdout.write("\033[H\033[2J\033[3J")
        sys.stdout.flush()


def filesystem_type(path: Path) -> str | None:
    """The type of the file system `path` lies on (Linux: from /proc/self/mounts), else None."""
    try:
        mounts = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, best_type = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def polling_reason(folder: Path) -> str | None:
    """Why native file events would miss saves to `folder`, or None where they work.

    WATCHFILES_FORCE_POLLING, when set, is left for watchfiles to honour (it also polls on WSL 2 by itself).
    """
    if os.environ.get("WATCHFILES_FORCE_POLLING"):
        return None
    uname = platform.uname()
    is_wsl = "microsoft" in uname.release.lower() and uname.system == "Linux"
    if is_wsl and str(folder.resolve()).startswith("/mnt/"):
        return "WSL does not pass on file events from Windows drives (/mnt/...)"
    fs = filesystem_type(folder) if uname.system == "Linux" else None
    if fs in REMOTE_FILESYSTEMS:
        where = display_path(folder)
        return f"{where} is on a {fs} mount, where edits made outside this machine raise no events"
    return None


def file_changes(folder: Path, force_polling: bool | None) -> Iterator[set[tuple[object, str]]]:
    """Batches of (change, path) from watchfiles, and an empty batch whenever a quarter second passes quietly.

    Falls back to polling when native file events are unavailable.
    """
    import watchfiles  # in the check venv; imported here so the rest of the module works without it

    options = {
        "debounce": DEBOUNCE_MS,
        "step": STEP_MS,
        "poll_delay_ms": POLL_DELAY_MS,
        "recursive": False,
        "rust_timeout": READY_MS,
        "yield_on_timeout": True,
    }
    try:
        yield from watchfiles.watch(folder, force_polling=force_polling, **options)
    except OSError as error:  # no inotify, or its watch limit is exhausted (typical in containers)
        if force_polling:
            raise
        print(paint(f"file events unavailable ({error}); polling instead", "yellow"), flush=True)
        yield from watchfiles.watch(folder, force_polling=True, **options)


def banner(folder: Path, polling: bool, reason: str | None) -> str:
    how = f" (polling: {reason})" if reason else " (polling)" if polling else ""
    return f"watching {display_path(folder)}/ for saves{how} - Ctrl-C to stop"


def watch(
    folder: Path,
    changes: Changes,
    grade: Grader = run_check,
    *,
    first: list[KataInfo] | None = None,
    once: bool = False,
    waiting: str = "",
) -> int:
    """Grade `first`, then each batch of `changes` that touches a kata; returns the last grading's exit code.

    `waiting` is printed once the first batch (empty or not) says the watcher is up, and after each
    grading. With `once`, stops after the first grading a change caused.
    """
    code = 0
    if first:
        code = grade(first)
    ready = False
    for batch in changes:
        if not ready:
            print(paint(waiting, "dim"), flush=True)
            ready = True
        katas = changed_katas(batch, folder)
        if not katas:
            continue
        clear_screen()
        names = ", ".join(kata.name for kata in katas)
        print(paint(f"{time.strftime('%H:%M:%S')} saved {names} - grading", "bold"), flush=True)
        code = grade(katas)
        if once:
            return code
        print(paint(waiting, "dim"), flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="watch", description=__doc__.splitlines()[0])
    parser.add_argument("katas", nargs="*", help="katas to grade once at the start")
    parser.add_argument("--poll", action="store_true", help="poll for changes instead of file events")
    parser.add_argument("--once", action="store_true", help="stop after grading the first save")
    args = parser.parse_args(argv)
    first = list(dict.fromkeys(select(selector) for selector in args.katas))
    folder = source_dir()
    if not folder.is_dir():
        print(f"{display_path(folder)}/ does not exist: nothing to watch", file=sys.stderr)
        return 1
    reason = None if args.poll else polling_reason(folder)
    force_polling = True if args.poll or reason else None
    try:
        return watch(
            folder,
            file_changes(folder, force_polling),
            first=first,
            once=args.once,
            waiting=banner(folder, bool(force_polling), reason),
        )
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not spoil the goodbye
        print("\nstopped watching - bye")
        return 0


if __name__ == "__main__":
    sys.exit(main())
