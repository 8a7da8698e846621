"""pytest plugin that grades fairly: fresh torch state per test, and one readable line per common mishap."""

from __future__ import annotations

import inspect
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import Phase, settings

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
}

# Verdicts a failed test can carry besides an ordinary failure; `pytest_report_teststatus` files them
# under their own heading so a fresh stub reads as "not started", not as a wall of tracebacks.
NOT_STARTED = "not started"
BROKEN = "broken"


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


def _last_frame_in_source(excinfo: pytest.ExceptionInfo[BaseException]) -> tuple[str, int, str] | None:
    """(file, line, function) of the innermost traceback entry inside the graded folder, if any."""
    root = source_dir().resolve()
    found = None
    for entry in excinfo.traceback:
        path = Path(entry.path)
        if path.resolve().is_relative_to(root):
            found = (display_path(path), entry.lineno + 1, entry.name)
    return found


def classify(
    excinfo: pytest.ExceptionInfo[BaseException], where: tuple[str, int, str] | None
) -> tuple[str, str] | None:
    """(verdict, one-line message) for a mishap that deserves one line instead of a traceback.

    `where` is the innermost traceback entry in the graded folder (see `_last_frame_in_source`).
    """
    exc = excinfo.value
    if isinstance(exc, KataImportError):
        return BROKEN, f"cannot import the kata: {exc.summary}"
    if isinstance(exc, KataNameMissing):
        return BROKEN, exc.summary
    if isinstance(exc, NotImplementedError):
        if where:
            path, line, function = where
            return NOT_STARTED, f"`{function}` still raises NotImplementedError ({path}:{line})"
        return NOT_STARTED, f"still raises NotImplementedError: {exc}"
    if isinstance(exc, pytest.fail.Exception) and str(exc).startswith(TIMEOUT_PREFIX):
        location = f" in `{where[2]}` ({where[0]}:{where[1]})" if where else ""
        return "failed", (
            f"timed out{location}: {exc} Likely an endless loop - a `while` whose condition never "
            "changes, or a loop counter that is never advanced. The test was stopped; the rest still run."
        )
    return None


def _definition_of(kata: str, name: str) -> str | None:
    """ "katas/k01_x.py:12" for a name the test used, so a failed assertion still points at learner code."""
    try:
        obj = getattr(load_kata(kata), name)
        _, line = inspect.getsourcelines(obj)
        return f"{display_path(Path(inspect.getsourcefile(obj) or ''))}:{line}"
    except Exception:  # anything odd the learner defined: no pointer is better than a crash
        return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    USED_NAMES.clear()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    report.kata_names = [name for _, name in dict.fromkeys(USED_NAMES)]
    if report.failed and call.excinfo is not None:
        where = _last_frame_in_source(call.excinfo)
        verdict = classify(call.excinfo, where)
        if verdict is not None:
            report.kata_verdict, report.longrepr = verdict
        if isinstance(call.excinfo.value, KataImportError | KataNameMissing):
            report.kata_location = call.excinfo.value.location
        elif where:
            report.kata_location = f"{where[0]}:{where[1]}"
        elif USED_NAMES:
            report.kata_location = _definition_of(*USED_NAMES[0])
    return report


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, str] | None:
    verdict = getattr(report, "kata_verdict", None)
    if report.failed and verdict == NOT_STARTED:
        return NOT_STARTED, "n", "NOT STARTED"
    if report.failed and verdict == BROKEN:
        return BROKEN, "B", "BROKEN"
    return None
