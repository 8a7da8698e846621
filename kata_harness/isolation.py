"""pytest plugin that grades each kata in its own forked process, with a wall-clock limit on every test.

Whatever a kata's code does - loop forever, crash the interpreter, call ``os._exit``, leave a thread or a
child process running, change torch's global state, patch the harness - it happens in a process that
grades that kata alone. The pytest process has imported torch but never runs learner code: it forks one
worker per kata, reads the worker's test reports through a pipe and reports them as its own, so the
terminal, the scoreboard, ``-x`` and editors see an ordinary run.

- A test that outlives its pytest-timeout limit by ``GRACE`` seconds (a C++ op that ignores the alarm,
  hypothesis generating more looping examples) has its worker killed; the test fails with one line and a
  fresh worker grades the kata's remaining tests.
- A worker that dies (a segfault, ``os._exit``, a ``KeyboardInterrupt`` or ``pytest.exit`` raised by kata
  code) fails the test it was running the same way.
- After ``MAX_ABNORMAL`` such endings in one kata, its remaining tests fail as "not graded" at once, so a
  kata broken that way costs seconds, not minutes.
- Every worker runs in its own process group, killed whole when the kata is graded: processes that kata
  code started do not outlive it.

Options
-------
``KATAS_ISOLATION=off`` grades every kata in the pytest process itself (what a debugger needs). Isolation
is also off under ``--pdb``, under a debugger or tracer, and where ``os.fork`` is unsafe or missing (macOS,
Windows); pytest-timeout then still stops an endless loop, but nothing else is contained.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import select
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from kata_harness.catalog import kata_of_test_file

ENV_VAR = "KATAS_ISOLATION"
GRACE = 5.0  # seconds a worker gets past a test's timeout before it is killed
DEFAULT_LIMIT = 60.0  # seconds, for a test without a pytest-timeout limit
MAX_ABNORMAL = 3  # killed or dead workers in one kata before its remaining tests are not graded
FRESH = "rest of the kata is graded in a fresh process."
LOG_HOOKS = (
    "pytest_runtest_logstart",
    "pytest_runtest_logreport",
    "pytest_runtest_logfinish",
    "pytest_warning_recorded",
)


def isolation_enabled(config: pytest.Config) -> bool:
    """Whether this run grades each kata in a forked worker (see the module docstring for when not)."""
    if os.environ.get(ENV_VAR, "").strip().lower() in ("off", "0", "no"):
        return False
    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return False  # macOS frameworks are not fork-safe once loaded; Windows has no fork
    if config.getoption("usepdb", False) or config.getoption("collectonly", False):
        return False
    return sys.gettrace() is None and "debugpy" not in sys.modules


def _set_parent_death_signal(signum: int) -> None:
    """Linux only: have the kernel send `signum` to this process when its parent dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signum)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def pytest_configure(config: pytest.Config) -> None:
    if isolation_enabled(config):
        config.pluginmanager.register(Isolation(config), "kata-isolation")


def warm_up() -> None:
    """Pay once, before forking, what every worker would pay again: the first op on the `meta` device loads
    torch's meta kernels and sympy (seconds). It starts no thread, so forking stays safe."""
    import torch

    (torch.empty(2, device="meta") + 1).sum()


def time_limit(item: pytest.Item) -> float:
    """The wall-clock seconds `item` may run before its worker is killed."""
    marker = item.get_closest_marker("timeout")
    timeout = marker.args[0] if marker and marker.args else marker.kwargs.get("timeout") if marker else None
    if timeout is None:
        timeout = item.config.getoption("timeout", None) or item.config.getini("timeout") or 0
    timeout = float(timeout or 0)
    return timeout + GRACE if timeout > 0 else DEFAULT_LIMIT


def _group_by_kata(items: list[pytest.Item]) -> list[list[pytest.Item]]:
    """The items split by kata (by test file for other tests), in the order each group first appears."""
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        key = kata_of_test_file(item.path) or str(item.path)
        groups.setdefault(key, []).append(item)
    return list(groups.values())


class _Sender:
    """The worker's only reporter: every log hook becomes one JSON line on the pipe to the pytest process."""

    def __init__(self, config: pytest.Config, fd: int) -> None:
        self.config = config
        self.pipe = os.fdopen(fd, "w", encoding="utf-8", buffering=1)

    def send(self, kind: str, **data: object) -> None:
        self.pipe.write(json.dumps({"kind": kind, **data}) + "\n")
        self.pipe.flush()

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.send("start", nodeid=nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self.send("report", report=data)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.send("finish", nodeid=nodeid)

    def pytest_warning_recorded(
        self, warning_message: warnings.WarningMessage, when: str, nodeid: str
    ) -> None:
        category = warning_message.category.__name__
        message = str(warning_message.message)
        where = {"filename": warning_message.filename, "lineno": warning_message.lineno}
        self.send("warning", category=category, message=message, when=when, nodeid=nodeid, **where)


def _worker(config: pytest.Config, items: list[pytest.Item], fd: int) -> None:
    """In the forked child: grade `items`, report each through the pipe, and exit without cleaning up."""
    os.setpgid(0, 0)  # our own process group: Ctrl-C goes to the parent, and a kill takes our children too
    _set_parent_death_signal(signal.SIGKILL)
    sender = _Sender(config, fd)
    for name in LOG_HOOKS:  # nothing but the sender reports here: the parent replays every report
        caller = getattr(config.hook, name)
        for impl in list(caller.get_hookimpls()):
            caller._remove_plugin(impl.plugin)
    config.pluginmanager.register(sender, "kata-isolation-sender")
    try:
        for index, item in enumerate(items):
            next_item = items[index + 1] if index + 1 < len(items) else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=next_item)
    except BaseException as error:  # KeyboardInterrupt, pytest.exit, SystemExit raised by kata code
        sender.send("abort", error=f"{type(error).__name__}: {error}".rstrip(": "))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # no atexit handlers, no waiting for threads the kata left running


@dataclass
class _Running:
    """What the parent knows of the test a worker is on."""

    item: pytest.Item
    deadline: float
    started: float = field(default_factory=time.monotonic)
    phases: set[str] = field(default_factory=set)


class Isolation:
    """The parent's side: fork a worker per kata, replay its reports, police its time, clean up after it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        # The parent must never touch CUDA: a process that initialised it cannot fork a working child.
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        _set_parent_death_signal(signal.SIGTERM)  # `nox` killed: do not grade on in the background

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            raise session.Interrupted(f"{session.testsfailed} error(s) during collection")
        warm_up()
        for group in _group_by_kata(session.items):
            self._grade_kata(session, group)
        return True

    def _grade_kata(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        pending = list(items)
        abnormal = 0
        while pending:
            if abnormal >= MAX_ABNORMAL:
                for item in pending:
                    message = (
                        f"not graded: this kata's process was stopped {abnormal} times already (see its "
                        "first failure); fix that, then grade the kata again"
                    )
                    _fail(item, "call", message, started=False)
                return
            worker = _Worker(self.config, pending)
            try:
                ending = worker.replay(session)
            finally:
                worker.close()
            pending = [item for item in pending if item.nodeid not in worker.finished]
            if ending is not None and worker.running is not None:
                running = worker.running
                _fail(running.item, "teardown" if "call" in running.phases else "call", ending, started=True)
                pending.remove(running.item)
                abnormal += 1


class _Worker:
    """One forked worker grading some of a kata's tests, as the pytest process sees it."""

    def __init__(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        self.config = config
        self.by_id = {item.nodeid: item for item in items}
        self.finished: set[str] = set()
        self.running: _Running | None = None
        read_fd, write_fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child, which never returns
            os.close(read_fd)
            _worker(config, items, write_fd)
        os.close(write_fd)
        self.fd = read_fd
        with contextlib.suppress(PermissionError, ProcessLookupError):
            os.setpgid(
                self.pid, self.pid
            )  # the worker does it too: whoever is first, a kill reaches the group

    def deadline(self) -> float | None:
        return self.running.deadline if self.running else None

    def replay(self, session: pytest.Session) -> str | None:
        """Report what the worker reports until it is done. Returns None, or one line saying how it ended
        in the middle of `self.running`."""
        for message in _messages(self.fd, self.deadline):
            if message is None:  # the running test's deadline passed
                assert self.running is not None
                seconds = time.monotonic() - self.running.started
                return (
                    f"timed out: still running after {seconds:.0f} s, so its process was stopped. Likely "
                    "an endless loop (a `while` whose condition never changes) or far too much work; the "
                    f"{FRESH}"
                )
            kind = message["kind"]
            if kind == "start":
                item = self.by_id[message["nodeid"]]
                self.running = _Running(item, time.monotonic() + time_limit(item))
                item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
            elif kind == "report":
                report = self.config.hook.pytest_report_from_serializable(
                    config=self.config, data=message["report"]
                )
                if isinstance(report.longrepr, list):  # a skip's (path, line, reason), which JSON made a list
                    report.longrepr = tuple(report.longrepr)
                if self.running is not None:
                    self.running.phases.add(report.when)
                self.by_id[report.nodeid].ihook.pytest_runtest_logreport(report=report)
                if session.shouldfail:  # -x, --maxfail: stop as pytest's own loop does
                    raise session.Failed(session.shouldfail)
                if session.shouldstop:
                    raise session.Interrupted(session.shouldstop)
            elif kind == "finish":
                item = self.by_id[message["nodeid"]]
                item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
                self.finished.add(item.nodeid)
                self.running = None
            elif kind == "warning":
                _replay_warning(self.config, message)
            elif kind == "abort" and self.running is not None:
                return (
                    f"the kata's code raised {message['error']}, which ends a whole test run (raise an "
                    f"ordinary exception instead); the {FRESH}"
                )
        return _death_message(self.pid) if self.running is not None else None

    def close(self) -> None:
        """Kill the worker's whole process group (what the kata started goes too) and reap the worker."""
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def _fail(item: pytest.Item, when: str, message: str, *, started: bool) -> None:
    """Report `item` as failed in phase `when` with `message`, as if a worker had reported it."""
    report = pytest.TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords={name: 1 for name in item.keywords},
        outcome="failed",
        longrepr=message,
        when=when,
    )
    if not started:
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _replay_warning(config: pytest.Config, data: dict) -> None:
    category = getattr(builtins, data["category"], None)
    category = category if isinstance(category, type) and issubclass(category, Warning) else UserWarning
    record = warnings.WarningMessage(category(data["message"]), category, data["filename"], data["lineno"])
    kwargs = {"warning_message": record, "when": data["when"], "nodeid": data["nodeid"], "location": None}
    config.hook.pytest_warning_recorded.call_historic(kwargs=kwargs)  # a historic hook, as pytest calls it


def _messages(fd: int, deadline: Callable[[], float | None]) -> Iterator[dict | None]:
    """The worker's messages as they arrive; None once `deadline()` (a monotonic time, or None) passes."""
    buffer = b""
    while True:
        limit = deadline()
        wait = None if limit is None else max(0.0, limit - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            yield None
            return
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield json.loads(line)


def _death_message(pid: int) -> str:
    """One line for a worker that died in the middle of a test (reaps it to learn how)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        status = 0
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        cause = f"was killed by {name}"
        if name in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE"):
            cause += " (a crash in native code, e.g. an out-of-bounds index into raw memory)"
    else:
        code = os.WEXITSTATUS(status)
        cause = f"exited with code {code} (`os._exit()`, or `sys.exit()` in a thread of the kata)"
    return f"the test's process {cause} in the middle of this test; the {FRESH}"
