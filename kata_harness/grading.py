"""pytest plugin that grades fairly: fresh torch state per test, and one readable line per common mishap."""

from __future__ import annotations

import functools
import inspect
import random
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import Phase, settings
from torch.utils._device import DeviceContext

from kata_harness.catalog import UnknownKata, find_kata

# Verdicts a failed test can carry besides an ordinary failure, NOT_STARTED and BROKEN:
# `pytest_report_teststatus` files them under their own heading so a fresh stub reads as "not started".
from kata_harness.progress import BROKEN, NOT_STARTED
from kata_harness.source import (
    USED_NAMES,
    KataImportError,
    KataNameMissing,
    display_path,
    load_kata,
    source_dir,
)

SEED = 0
TIMEOUT_PREFIX = "Timeout (>"  # what pytest-timeout's failure message starts with

AUTOCAST_DEVICES = ("cpu", "cuda")
MODULE_HOOK_DICTS = tuple(
    name for name in dir(torch.nn.modules.module) if name.startswith("_global") and name.endswith("_hooks")
)
RECURSION_LIMIT = sys.getrecursionlimit()
THREADS = torch.get_num_threads()


def _autocast_on() -> tuple[str, ...]:
    return tuple(device for device in AUTOCAST_DEVICES if torch.is_autocast_enabled(device))


def _autocast_off(_: object) -> None:
    for device in AUTOCAST_DEVICES:
        torch.set_autocast_enabled(device, False)


def _global_module_hooks() -> int:
    """Hooks registered for every module at once (`register_module_forward_hook` and friends)."""
    return sum(len(getattr(torch.nn.modules.module, name)) for name in MODULE_HOOK_DICTS)


def _remove_global_module_hooks(_: object) -> None:
    for name in MODULE_HOOK_DICTS:
        getattr(torch.nn.modules.module, name).clear()


def _open_function_modes() -> int:
    """TorchFunctionModes entered and never exited (the default-device mode is counted on its own)."""
    modes = [torch._C._get_function_stack_at(i) for i in range(torch._C._len_torch_function_stack())]
    return sum(not isinstance(mode, DeviceContext) for mode in modes)


def _close_function_modes(_: object) -> None:
    while torch._C._len_torch_function_stack():
        torch._C._pop_torch_function_stack()


def _close_dispatch_modes(_: object) -> None:
    while torch._C._len_torch_dispatch_stack():
        torch._C._pop_torch_dispatch_stack()


# Each test starts from these; learner code that changes one without restoring it is reported.
GLOBAL_STATE = {
    "default dtype": (torch.get_default_dtype, torch.set_default_dtype, torch.float32),
    "grad mode": (torch.is_grad_enabled, torch.set_grad_enabled, True),
    # None removes the device mode; setting "cpu" would push a slow TorchFunctionMode instead.
    "default device": (
        torch.get_default_device,
        lambda _: torch.set_default_device(None),
        torch.device("cpu"),
    ),
    "anomaly detection": (torch.is_anomaly_enabled, torch.set_anomaly_enabled, False),
    "deterministic algorithms": (
        torch.are_deterministic_algorithms_enabled,
        torch.use_deterministic_algorithms,
        False,
    ),
    "autocast": (_autocast_on, _autocast_off, ()),
    "global module hooks (torch.nn.modules.module.register_module_*_hook)": (
        _global_module_hooks,
        _remove_global_module_hooks,
        0,
    ),
    "open TorchFunctionModes": (_open_function_modes, _close_function_modes, 0),
    "open TorchDispatchModes": (torch._C._len_torch_dispatch_stack, _close_dispatch_modes, 0),
    "recursion limit": (sys.getrecursionlimit, sys.setrecursionlimit, RECURSION_LIMIT),
    "CPU threads": (torch.get_num_threads, torch.set_num_threads, THREADS),
}


def pytest_configure(config: pytest.Config) -> None:
    # Bounded, derandomised property tests: the same examples every run, no example database on disk,
    # and no "explain" phase, which re-runs each failing example under a tracer: a stub fails them all.
    settings.register_profile(
        "katas",
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    )
    settings.load_profile("katas")


def reset_global_state() -> None:
    """Seed every RNG a kata may use and put torch's global switches back to their defaults."""
    for getter, setter, default in GLOBAL_STATE.values():
        if getter() != default:
            setter(default)
    torch.set_flush_denormal(False)  # no getter to tell whether a kata turned it on: always off
    torch.manual_seed(SEED)
    random.seed(SEED)
    np.random.seed(SEED)


def leaked_state() -> list[str]:
    """The global switches that differ from their defaults, described for a learner."""
    return [
        f"{name} left as {getter()!r} (default {default!r})"
        for name, (getter, _, default) in GLOBAL_STATE.items()
        if getter() != default
    ]


@pytest.fixture(autouse=True)
def fresh_torch_state() -> Iterator[None]:
    """Every test starts seeded with torch's defaults, and nothing a test changes reaches the next one."""
    reset_global_state()
    yield
    leaks = leaked_state()
    reset_global_state()
    if leaks:
        pytest.fail(
            "leaked global state: "
            + "; ".join(leaks)
            + ". Your code changed a torch-wide setting and did not restore it (the harness has now): "
            "prefer a context manager such as `torch.no_grad()`, or restore the old value in a `finally`.",
            pytrace=False,
        )


class _StopExamples(BaseException):
    """Ends a hypothesis test at its first example: hypothesis retries and shrinks every Exception (and a
    timeout's `Failed`), which would cost a stub seconds per test and let an endless loop run on past its
    alarm. A BaseException of ours passes through it untouched; the report shows `cause`."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _in_source(path: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(source_dir().resolve())


def _raised_by_kata(exc: BaseException) -> bool:
    """Whether the innermost frame of `exc`'s traceback is the kata's code (not torch's, not the test's)."""
    frames = list(traceback.walk_tb(exc.__traceback__))
    return bool(frames) and _in_source(frames[-1][0].f_code.co_filename)


def _stops_at_once(exc: BaseException) -> bool:
    """An exception that the rest of a hypothesis test's examples cannot change: a stub, a broken kata, a
    timeout."""
    if isinstance(exc, KataImportError | KataNameMissing):
        return True
    if isinstance(exc, NotImplementedError):
        return _raised_by_kata(exc)
    return isinstance(exc, pytest.fail.Exception) and str(exc).startswith(TIMEOUT_PREFIX)


def _stop_examples_early(item: pytest.Item) -> None:
    """Wrap a hypothesis test's inner test (a documented extension point) so `_stops_at_once` ends it."""
    handle = getattr(getattr(item, "obj", None), "hypothesis", None)
    if handle is None or getattr(handle.inner_test, "_stops_early", False):
        return
    inner = handle.inner_test

    @functools.wraps(inner)
    def stopping_early(*args: object, **kwargs: object) -> object:
        try:
            return inner(*args, **kwargs)
        except BaseException as exc:
            if _stops_at_once(exc):
                raise _StopExamples(exc) from None
            raise

    stopping_early._stops_early = True  # type: ignore[attr-defined]
    handle.inner_test = stopping_early


def pytest_runtest_setup(item: pytest.Item) -> None:
    _stop_examples_early(item)


def _last_frame_in_source(excinfo: pytest.ExceptionInfo[BaseException]) -> tuple[str, int, str] | None:
    """(file, line, function) of the innermost traceback entry inside the graded folder, if any."""
    found = None
    for entry in excinfo.traceback:
        if _in_source(entry.path):
            found = (display_path(Path(entry.path)), entry.lineno + 1, entry.name)
    return found


def classify(
    excinfo: pytest.ExceptionInfo[BaseException], where: tuple[str, int, str] | None
) -> tuple[str, str] | None:
    """(verdict, one-line message) for a mishap that deserves one line instead of a traceback.

    `where` is the innermost traceback entry in the graded folder (see `_last_frame_in_source`).
    """
    exc = excinfo.value
    at = f" in `{where[2]}` ({where[0]}:{where[1]})" if where else ""
    if isinstance(exc, KataImportError):
        return BROKEN, f"cannot import the kata: {exc.summary}"
    if isinstance(exc, KataNameMissing):
        return BROKEN, exc.summary
    if isinstance(exc, NotImplementedError) and _raised_by_kata(exc):
        if where:
            path, line, function = where
            return NOT_STARTED, f"`{function}` still raises NotImplementedError ({path}:{line})"
        return NOT_STARTED, f"still raises NotImplementedError: {exc}"
    if isinstance(exc, NotImplementedError):
        return "failed", (
            f"torch raised NotImplementedError{at}: {exc} - this is not an unfinished stub: a method torch "
            "looks for is misspelled (`forward`, or `backward` of a custom autograd.Function), or the op "
            "does not support this dtype or device."
        )
    if isinstance(exc, pytest.skip.Exception | pytest.xfail.Exception) and where:
        return "failed", (
            f"the kata's code called pytest.skip or pytest.xfail{at}: a kata cannot skip its own grading - "
            "raise NotImplementedError for a task you have not done yet."
        )
    if isinstance(exc, pytest.fail.Exception) and str(exc).startswith(TIMEOUT_PREFIX):
        return "failed", (
            f"timed out{at}: {exc} Likely an endless loop - a `while` whose condition never "
            "changes, or a loop counter that is never advanced. The test was stopped; the rest still run."
        )
    return None


MAX_CAPTURED = 5_000  # characters of a test's captured output kept in its report


def _cut_captured_output(report: pytest.TestReport) -> None:
    """Keep the start of a huge captured print: megabytes of it would drown the run and the terminal."""
    sections = []
    for title, text in report.sections:
        if len(text) > MAX_CAPTURED:
            cut = len(text) - MAX_CAPTURED
            text = f"{text[:MAX_CAPTURED]}\n[... {cut:,} more characters cut by the grader ...]\n"
        sections.append((title, text))
    report.sections = sections


def _definition_of(kata: str, name: str, test_name: str) -> str | None:
    """ "katas/k01_x.py:12" for a name the test used, so a failed assertion still points at learner code.

    For a class, the method the test is most likely about: one the test's name mentions (`step` for
    test_momentum_sgd_step_...), else the first one the class defines that is not a dunder, else the class.
    """
    try:
        obj = getattr(load_kata(kata), name)
        if inspect.isclass(obj):
            methods = [value for key, value in vars(obj).items() if inspect.isfunction(value)]
            named = [m for m in methods if m.__name__.strip("_") and m.__name__.strip("_") in test_name]
            plain = [m for m in methods if not m.__name__.startswith("__")]
            obj = next(iter(named or plain), obj)
        _, line = inspect.getsourcelines(obj)
        return f"{display_path(Path(inspect.getsourcefile(obj) or ''))}:{line}"
    except Exception:  # anything odd the learner defined: no pointer is better than a crash
        return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    USED_NAMES.clear()
    return (yield)


def _raised(call: pytest.CallInfo[None]) -> pytest.ExceptionInfo[BaseException] | None:
    """What the test phase raised, seen through `_StopExamples` to the exception that ended it."""
    excinfo = call.excinfo
    if excinfo is not None and isinstance(excinfo.value, _StopExamples):
        return pytest.ExceptionInfo.from_exception(excinfo.value.cause)
    return excinfo


@pytest.hookimpl(tryfirst=True, specname="pytest_runtest_makereport")
def pytest_runtest_makereport_in_one_line(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> pytest.TestReport | None:
    """The report of a mishap that is shown in one line anyway, built without pytest's rendering of the
    traceback: that costs tens of milliseconds a test, and made grading a fresh stub twice as slow as
    grading a finished kata. None leaves the report to pytest."""
    excinfo = _raised(call)
    if excinfo is None:
        return None
    verdict = classify(excinfo, _last_frame_in_source(excinfo))
    if verdict is None:
        return None
    sections = [(f"Captured {key} {when}", content) for when, key, content in item._report_sections]
    return pytest.TestReport(
        item.nodeid,
        item.location,
        {name: 1 for name in item.keywords},
        "failed",
        verdict[1],
        call.when,
        sections,
        call.duration,
        call.start,
        call.stop,
        item.user_properties,
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    report.kata_names = [name for _, name in dict.fromkeys(USED_NAMES)]
    _cut_captured_output(report)
    excinfo = _raised(call)
    if excinfo is None or not (report.failed or report.skipped):
        return report
    where = _last_frame_in_source(excinfo)
    verdict = classify(excinfo, where)
    if verdict is not None:
        report.outcome = "failed"
        report.kata_verdict, report.longrepr = verdict
    if not report.failed:
        return report
    if isinstance(excinfo.value, KataImportError | KataNameMissing):
        report.kata_location = excinfo.value.location
    elif where:
        report.kata_location = f"{where[0]}:{where[1]}"
    elif USED_NAMES and _is_bug_hunt(USED_NAMES[0][0]):  # the symptom names no place: neither do we
        report.kata_location = display_path(source_dir() / f"{USED_NAMES[0][0]}.py")
    elif USED_NAMES:
        report.kata_location = _definition_of(*USED_NAMES[0], item.name)
    return report


def _is_bug_hunt(kata: str) -> bool:
    try:
        return find_kata(kata).bug_hunt
    except UnknownKata:
        return False


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, str] | None:
    verdict = getattr(report, "kata_verdict", None)
    if report.failed and verdict == NOT_STARTED:
        return NOT_STARTED, "n", "NOT STARTED"
    if report.failed and verdict == BROKEN:
        return BROKEN, "B", "BROKEN"
    return None
