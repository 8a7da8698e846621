"""Load kata modules by file path from the folder that KATA_SOURCE names, without ever writing into it."""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_ENV = "KATA_SOURCE"
DEFAULT_SOURCE = "katas"


def source_dir() -> Path:
    """The folder being graded: $KATA_SOURCE (absolute, or relative to the repo root), default katas/."""
    path = Path(os.environ.get(SOURCE_ENV) or DEFAULT_SOURCE).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def display_path(path: Path) -> str:
    """`path` relative to the repo root where it lies inside it, so messages stay short and clickable."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


class KataImportError(Exception):
    """A kata file that cannot be imported; `summary` is one line naming the file, line and error."""

    def __init__(self, kata: str, summary: str, location: str) -> None:
        super().__init__(summary)
        self.kata = kata
        self.summary = summary
        self.location = location  # "katas/k01_x.py:12", or the file alone when no line is known


class KataNameMissing(AttributeError):
    """The kata file imports but lacks a name the contract promises."""

    def __init__(self, kata: str, path: Path, name: str) -> None:
        self.summary = (
            f"{display_path(path)} defines no `{name}` - was it renamed or deleted? "
            f"The grader needs every name the stub ships with."
        )
        self.location = display_path(path)
        super().__init__(self.summary)
        self.kata = kata
        self.name = name


def _module_name(path: Path) -> str:
    # The folder's hash keeps katas/k01 and solutions/k01 apart in sys.modules.
    digest = hashlib.sha1(str(path.parent.resolve()).encode()).hexdigest()[:10]
    return f"_kata_{digest}_{path.stem}"


def _import_error(kata: str, exc: BaseException, path: Path) -> KataImportError:
    where = display_path(path)
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        location = f"{where}:{exc.lineno}"
        return KataImportError(kata, f"{location}: {type(exc).__name__}: {exc.msg}", location)
    if isinstance(exc, SystemExit):
        exc = SystemExit(f"sys.exit({exc.code!r}) ends the whole program: a kata file must not call it")
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if Path(frame.f_code.co_filename) == path:
            line = lineno
    location = f"{where}:{line}" if line else where
    return KataImportError(kata, f"{location}: {type(exc).__name__} while importing: {exc}", location)


def import_kata_file(path: Path) -> ModuleType:
    """Execute `path` as a fresh module; compiling from source means no __pycache__ is written beside it."""
    name = _module_name(path)
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it executes
    try:
        # From bytes, so Python itself decodes: a UTF-8 BOM or a `# -*- coding -*-` line are fine.
        code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@dataclass
class Kata:
    """The learner's kata module, imported on first use so that a broken file fails only its own tests."""

    name: str
    _loaded: dict[Path, ModuleType | KataImportError] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> Path:
        return source_dir() / f"{self.name}.py"

    @property
    def module(self) -> ModuleType:
        path = self.path
        if path not in self._loaded:
            self._loaded[path] = self._import(path)
        loaded = self._loaded[path]
        if isinstance(loaded, KataImportError):
            # A fresh exception each time: re-raising one instance grows its traceback with every test (and
            # every hypothesis example) until formatting the report takes longer than the test's timeout.
            raise KataImportError(loaded.kata, loaded.summary, loaded.location)
        return loaded

    def _import(self, path: Path) -> ModuleType | KataImportError:
        if not path.exists():
            return KataImportError(self.name, missing_kata_message(self.name, path), display_path(path))
        try:
            return import_kata_file(path)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: `sys.exit()` at import must not end the run
            return _import_error(self.name, exc, path)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # no contract name is private; pytest's collection probes such names
            raise AttributeError(attr)
        module = self.module
        try:
            value = getattr(module, attr)
        except AttributeError:
            raise KataNameMissing(self.name, self.path, attr) from None
        USED_NAMES.append((self.name, attr))
        return value


# Names a test reached through a Kata, in order: the scoreboard points a learner at the first one that failed.
USED_NAMES: list[tuple[str, str]] = []


def missing_kata_message(name: str, path: Path) -> str:
    """One line for a kata file that is not there, with the way back that fits the graded folder."""
    where = display_path(path)
    if path.parent.resolve() == (REPO_ROOT / DEFAULT_SOURCE).resolve():
        return f"{where} is missing - `nox -s reset -- {kata_number(name)}` brings back the stub"
    return (
        f"{where} is missing: ${SOURCE_ENV} names {display_path(path.parent)}, which has no {path.name} - "
        f"copy the kata there, or unset {SOURCE_ENV} to grade katas/"
    )


def kata_number(name: str) -> str:
    """The number a learner types for a kata: "4" for "k04_autograd"."""
    return str(int(name[1:3]))


def load_kata(name: str) -> Kata:
    """The kata module `name` (e.g. "k04_autograd") from the graded folder, imported lazily."""
    return Kata(name)
