"""The stub generator: what it keeps, what it replaces, and that it is stable under ruff format."""

import ast
from pathlib import Path

import pytest

from kata_harness import stubgen
from kata_harness.stubgen import STUB_BODY, make_stub

SOLUTION = '''"""Module docstring."""

import torch

SCALE = 2


def _helper(x):
    return x


def public(x: int) -> int:
    """Contract."""
    # a comment that gives the answer away
    return _helper(x) * SCALE


class Thing(torch.nn.Module):
    """Class docstring."""

    size = 3

    def __init__(self) -> None:
        """Init docstring."""
        super().__init__()

    @staticmethod
    def forward(ctx, x):
        return x

    def _private(self):
        return 1


def scaffold(x):  # stub: keep
    return x + 1
'''


def test_bodies_become_not_implemented_and_docstrings_stay() -> None:
    stub = make_stub(SOLUTION)
    tree = ast.parse(stub)
    public = next(n for n in tree.body if getattr(n, "name", "") == "public")
    assert ast.get_docstring(public) == "Contract."
    assert ast.unparse(public.body[-1]) == "raise NotImplementedError"
    assert "gives the answer away" not in stub and "_helper(x) * SCALE" not in stub
    assert stub.count(STUB_BODY) == 3  # public, __init__, forward


def test_module_level_statements_and_decorators_stay() -> None:
    stub = make_stub(SOLUTION)
    for kept in ('"""Module docstring."""', "import torch", "SCALE = 2", "size = 3", "@staticmethod"):
        assert kept in stub


def test_private_helpers_are_dropped_and_kept_scaffolding_stays() -> None:
    stub = make_stub(SOLUTION)
    assert "_helper" not in stub and "_private" not in stub
    assert "def scaffold(x):  # stub: keep\n    return x + 1\n" in stub


def test_stub_is_idempotent() -> None:
    stub = make_stub(SOLUTION)
    assert make_stub(stub) == stub


def test_writing_over_a_changed_file_backs_it_up_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stubgen, "BACKUPS", tmp_path / "backups")
    solution = tmp_path / "k90_x.py"
    solution.write_text('def f():\n    """Doc."""\n    return 1\n')
    target = tmp_path / "out" / "k90_x.py"
    assert stubgen.write_stub(solution, target) is None  # nothing there yet
    assert stubgen.write_stub(solution, target) is None  # the stub already: nothing to keep
    target.write_text("def f():\n    return 2  # learner work\n")
    backup = stubgen.write_stub(solution, target)
    assert backup is not None and backup.read_text() == "def f():\n    return 2  # learner work\n"
    assert target.read_text() == make_stub(solution.read_text())
