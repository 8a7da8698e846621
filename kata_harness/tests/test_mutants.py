"""nox -s mutants: a wrong mutant is killed, a harmless one survives, a run that proves nothing is invalid."""

from __future__ import annotations

import pytest

from kata_harness import mutants
from kata_harness.catalog import find_kata

pytestmark = pytest.mark.timeout(300)


def test_killed_survived_and_invalid_mutants_are_told_apart() -> None:
    kata = find_kata("1")
    source = kata.solution.read_text(encoding="utf-8")
    line = next(text for text in source.splitlines() if "nn.ReLU()" in text and text.strip().endswith(","))
    cases = {
        "no-op": ("from __future__ import annotations", "from __future__ import annotations"),
        "wrong": (line, line.replace("nn.ReLU()", "nn.Sigmoid()")),
        "ambiguous": ("def ", "def "),
        "syntax": ("from __future__ import annotations", "from __future__ import annotations ("),
        "does not import": ("from __future__ import annotations", "import no_such_module_anywhere"),
    }
    batch = [mutants.Mutant(kata, i, bug, *edit) for i, (bug, edit) in enumerate(cases.items(), 1)]
    outcomes = {mutant.bug: outcome for mutant, outcome in mutants.run_mutants_forked(batch, jobs=2)}
    assert outcomes["no-op"] == (False, "SURVIVED: every test passes")
    assert outcomes["wrong"][0] is True and outcomes["wrong"][1].startswith("killed by test_build_mlp")
    for bug in ("ambiguous", "syntax", "does not import"):
        assert outcomes[bug][0] is False and outcomes[bug][1].startswith("INVALID"), outcomes[bug]
