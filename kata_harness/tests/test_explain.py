"""explain: model answers to every question a kata asks, behind the same spoiler guard as compare."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kata_harness import catalog, explain, pictures, workflow
from kata_harness.catalog import all_katas, find_kata

DOCSTRING = '''"""A title

Interview question: Why?

Difficulty 3/5, about 40 minutes, after katas 4 and 6.

Follow-up questions
===================
- First, on
  two lines?
- Second?

Grade this kata: `nox -s check -- 90`.
"""
'''


def test_the_catalog_reads_follow_ups_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "k90_x.py"
    path.write_text(DOCSTRING)
    info = catalog.read_kata(path)
    assert info.follow_ups == ("First, on two lines?", "Second?")
    assert (info.difficulty, info.minutes, info.after) == (3, 40, (4, 6))


def test_every_kata_with_answers_answers_every_question() -> None:
    for kata in all_katas():
        if explain.answers_file(kata).exists():
            assert explain.missing_answers(kata) == [], kata.name


def test_a_missing_answer_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kata = next(k for k in all_katas() if explain.answers_file(k).exists())
    text = explain.answers_file(kata).read_text()
    monkeypatch.setattr(explain, "ANSWERS", tmp_path)
    (tmp_path / f"{kata.name}.toml").write_text(text.replace(kata.follow_ups[0], "Some other question?"))
    assert explain.missing_answers(kata) == [
        f"{explain.display_path(tmp_path / f'{kata.name}.toml')}: no answer to {kata.follow_ups[0]!r}"
    ]


def test_peek_prints_each_question_before_its_answer(capsys: pytest.CaptureFixture[str]) -> None:
    kata = next(k for k in all_katas() if explain.answers_file(k).exists())
    assert explain.main([str(kata.number), "--peek"]) == 0
    output = capsys.readouterr().out
    positions = [output.index(question[:60]) for question in explain.questions(kata)]
    assert positions == sorted(positions)
    assert "what an interviewer listens for" in output


def test_an_unfinished_kata_is_refused_off_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kata = next(k for k in all_katas() if explain.answers_file(k).exists())
    failing = [{"name": "test_x", "nodeid": "t::test_x", "outcome": "failed", "message": "", "names": []}]
    monkeypatch.setattr(workflow, "grade", lambda kata, **_: failing)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert explain.main([kata.name]) == 1
    captured = capsys.readouterr()
    assert "does not pass yet (test_x fails)" in captured.err and "--peek" in captured.err
    assert kata.follow_ups[0] not in captured.out


def test_a_kata_without_answers_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(explain, "ANSWERS", tmp_path)
    assert explain.missing_answers(find_kata("1"))[0].startswith("kata 1 has no answers yet")


class _RecordingPlot:
    """Stands in for matplotlib.pyplot: records what a drawing plots, draws nothing."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return lambda *args, **kwargs: self.calls.append(name)


@pytest.mark.parametrize("kata", sorted(pictures.DRAWINGS))
def test_every_picture_draws_without_torch(kata: str) -> None:
    plot = _RecordingPlot()
    pictures.DRAWINGS[kata](plot)
    assert "plot" in plot.calls and "title" in plot.calls


def test_without_matplotlib_explain_says_how_to_get_the_picture(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kata = next(k for k in all_katas() if k.name in pictures.DRAWINGS and explain.answers_file(k).exists())

    def no_matplotlib(name: str) -> None:
        raise ModuleNotFoundError("No module named 'matplotlib'")

    monkeypatch.setattr(pictures, "draw", no_matplotlib)
    assert explain.main([kata.name, "--peek"]) == 0
    assert pictures.INSTALL_HINT in capsys.readouterr().out
