"""A run that finds no graders (say, `pytest` started inside katas/) says where they are."""

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and reporter is not None:
        reporter.write_line(
            "no graders here: they live in tests/ - run `nox -s check` (or `pytest` in the repository root); "
            "`nox -s check -- 4` grades kata 4 alone",
            yellow=True,
        )
