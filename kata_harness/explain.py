"""Print model answers to a kata's interview question and to every one of its follow-up questions.

Usage: ``python -m kata_harness.explain KATA [--peek]`` (``nox -s explain -- 4``), and
``python -m kata_harness.explain --check`` (verify: every question of every kata has its answer).

The answers live in ``answers/kNN_slug.toml``, beside the hints::

    listen_for = '''What an interviewer listens for, in a few lines.'''

    [[answer]]
    question = "What is Autograd in PyTorch?"   # the kata's question, word for word
    answer = '''...'''

    [[answer]]
    question = "What does `retain_graph=True` do, ...?"   # each follow-up, word for word
    answer = '''...'''

Until the kata passes, it asks before answering (on a terminal) or refuses (elsewhere), like ``compare``;
``--peek`` answers without grading or asking.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kata_harness import pictures
from kata_harness.catalog import KataInfo, all_katas
from kata_harness.source import REPO_ROOT, display_path
from kata_harness.workflow import OneLineParser, confirmed, fail, number, paint, select, wrap

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: nox itself depends on tomli there
    import tomli as tomllib  # type: ignore[no-redef]

ANSWERS = REPO_ROOT / "answers"


class AnswersMissing(Exception):
    """The kata's answers file is absent or unreadable; the message is one line."""


def answers_file(kata: KataInfo) -> Path:
    return ANSWERS / f"{kata.name}.toml"


def _same(question: str) -> str:
    return " ".join(question.split())


def load_answers(kata: KataInfo) -> tuple[dict[str, str], str]:
    """({question: answer}, what an interviewer listens for) for the kata."""
    path = answers_file(kata)
    where = display_path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
        answers = {_same(entry["question"]): entry["answer"].strip() for entry in table.get("answer", [])}
    except FileNotFoundError:
        raise AnswersMissing(f"kata {number(kata)} has no answers yet ({where} is missing)") from None
    except (
        OSError,
        UnicodeDecodeError,
        tomllib.TOMLDecodeError,
        LookupError,
        TypeError,
        AttributeError,
    ) as error:
        raise AnswersMissing(f"{where} cannot be read: {error!r}") from None
    return answers, str(table.get("listen_for", "")).strip()


def questions(kata: KataInfo) -> list[str]:
    """The interview question, then every follow-up, as the kata's docstring words them."""
    return [kata.question, *kata.follow_ups]


def missing_answers(kata: KataInfo) -> list[str]:
    """One line per question of the kata that its answers file does not answer (or per file problem)."""
    try:
        answers, listen_for = load_answers(kata)
    except AnswersMissing as error:
        return [str(error)]
    problems = [
        f"{display_path(answers_file(kata))}: no answer to {question!r}"
        for question in questions(kata)
        if _same(question) not in answers
    ]
    if not listen_for:
        problems.append(f"{display_path(answers_file(kata))}: no `listen_for`")
    return problems


def explain(kata: KataInfo) -> None:
    answers, listen_for = load_answers(kata)
    print(paint(f"kata {number(kata)} - {kata.title}: model answers", "bold"))
    for index, question in enumerate(questions(kata)):
        label = "interview question" if index == 0 else f"follow-up {index}/{len(kata.follow_ups)}"
        print()
        print(paint(f"{label}: {question}", "cyan"))
        print(wrap(answers.get(_same(question), "(no answer written yet)")))
    if listen_for:
        print()
        print(paint("what an interviewer listens for:", "bold"))
        print(wrap(listen_for))
    if kata.name in pictures.DRAWINGS:
        print()
        try:
            path = pictures.draw(kata.name)
        except ModuleNotFoundError:
            print(f"A picture goes with these answers: `{pictures.INSTALL_HINT}` into the Python that runs")
            print("nox, then run explain again to get it.")
        else:
            print(paint(f"a picture of it: {display_path(path)}", "bold"))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="explain", description=__doc__.splitlines()[0])
    parser.add_argument("kata", nargs="?", help='the kata: "4", "k04" or "k04_autograd"')
    parser.add_argument("--peek", action="store_true", help="answer without grading or asking first")
    parser.add_argument("--check", action="store_true", help="verify: every question has an answer")
    args = parser.parse_args(argv)
    if args.check:
        problems = [problem for kata in all_katas() for problem in missing_answers(kata)]
        for problem in problems:
            print(problem)
        print(f"explain --check: {'FAILED' if problems else 'ok'} ({len(problems)} problems)")
        return 1 if problems else 0
    if args.kata is None:
        return fail("say which kata to explain, e.g. `nox -s explain -- 4`", 2)
    kata = select(args.kata)
    try:
        load_answers(kata)
    except AnswersMissing as error:
        return fail(str(error))
    if not args.peek:
        show, why_not = confirmed(kata, "the model answers")
        if not show:
            return fail(why_not)
    explain(kata)
    return 0


if __name__ == "__main__":
    sys.exit(main())
