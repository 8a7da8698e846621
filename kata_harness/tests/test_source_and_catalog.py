"""Loading kata files by path, and the catalog that names them."""

import sys
from pathlib import Path

import pytest

from kata_harness.catalog import UnknownKata, all_katas, find_kata, is_kata_selector, kata_of_test_file
from kata_harness.source import (
    REPO_ROOT,
    KataImportError,
    KataNameMissing,
    load_kata,
    missing_kata_message,
    source_dir,
)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def test_one_file_name_in_two_folders_never_collides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "katas", "k90_same", "WHO = 'katas'\n")
    write(tmp_path / "solutions", "k90_same", "WHO = 'solutions'\n")
    kata = load_kata("k90_same")
    monkeypatch.setenv("KATA_SOURCE", str(tmp_path / "katas"))
    learner = kata.module
    monkeypatch.setenv("KATA_SOURCE", str(tmp_path / "solutions"))
    reference = kata.module
    assert (learner.WHO, reference.WHO) == ("katas", "solutions")
    assert learner.__name__ != reference.__name__
    assert sys.modules[learner.__name__] is learner and sys.modules[reference.__name__] is reference


def test_relative_source_is_relative_to_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATA_SOURCE", "solutions")
    assert source_dir() == REPO_ROOT / "solutions"
    monkeypatch.delenv("KATA_SOURCE")
    assert source_dir() == REPO_ROOT / "katas"


def test_missing_file_in_katas_points_at_reset(tmp_path: Path) -> None:
    message = missing_kata_message("k04_autograd", REPO_ROOT / "katas" / "k04_autograd.py")
    assert message == "katas/k04_autograd.py is missing - `nox -s reset -- 4` brings back the stub"


def test_missing_file_elsewhere_points_at_kata_source_not_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KATA_SOURCE", str(tmp_path))
    with pytest.raises(KataImportError, match=r"KATA_SOURCE names .*, which has no k04_autograd.py") as error:
        _ = load_kata("k04_autograd").anything
    assert "reset" not in str(error.value), "reset writes katas/, not the folder being graded"


def test_missing_name_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "k90_names", "def present():\n    return 1\n")
    monkeypatch.setenv("KATA_SOURCE", str(tmp_path))
    kata = load_kata("k90_names")
    assert kata.present() == 1
    with pytest.raises(KataNameMissing, match="defines no `absent`"):
        _ = kata.absent


def test_loading_writes_no_bytecode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "k90_clean", "X = 1\n")
    monkeypatch.setenv("KATA_SOURCE", str(tmp_path))
    assert load_kata("k90_clean").X == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k90_clean.py"]


def test_catalog_lists_every_solution_with_title_question_and_tasks() -> None:
    katas = all_katas()
    assert [k.name for k in katas] == sorted(
        p.stem for p in (REPO_ROOT / "solutions").glob("k[0-9][0-9]_*.py")
    )
    for kata in katas:
        assert kata.title and kata.question, f"{kata.name}: docstring lacks a title or question line"
        assert kata.tasks, f"{kata.name} has no public names"
        assert kata.test_file.exists(), f"{kata.name} has no grader {kata.test_file}"


@pytest.mark.parametrize("selector", ["1", "01", "k01", "k01_pytorch_features", "test_k01_pytorch_features",
                                      "katas/k01_pytorch_features.py", "K01"])  # fmt: skip
def test_find_kata_accepts_every_spelling(selector: str) -> None:
    assert find_kata(selector).name == "k01_pytorch_features"
    assert is_kata_selector(selector)


def test_unknown_kata_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownKata) as error:
        find_kata("42")
    message = str(error.value)
    assert "\n" not in message
    assert all(kata.name in message for kata in all_katas())


@pytest.mark.parametrize("arg", ["-x", "-k", "tests/test_k01_pytorch_features.py::test_x", "--json"])
def test_pytest_arguments_are_not_kata_selectors(arg: str) -> None:
    assert not is_kata_selector(arg)


def test_kata_of_test_file() -> None:
    assert kata_of_test_file("tests/test_k04_autograd.py") == "k04_autograd"
    assert kata_of_test_file("kata_harness/tests/test_grading.py") is None


def test_readme_lists_every_kata() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for kata in all_katas():
        tasks = ", ".join(f"`{task}`" for task in kata.tasks)
        if kata.bug_hunt:
            tasks = f"fix {len(kata.tasks)} planted bugs"
        level = f"{kata.difficulty}/5" if kata.difficulty else "-"
        minutes = str(kata.minutes) if kata.minutes else "-"
        row = f"| {kata.number} | {kata.title} | {level} | {minutes} | {kata.question} | {tasks} |"
        assert row in readme, f"README's kata table lacks or misstates kata {kata.number}; expected: {row}"
