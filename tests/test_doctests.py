"""The ``>>>`` examples in skydiff's docstrings run and print what they say (a stale example is a bug users hit).

Every module under ``src/skydiff`` whose source holds ``>>>`` is collected; examples that train or run for long
carry ``# doctest: +SKIP``. The same check: ``python -m pytest --doctest-modules src/skydiff``.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import skydiff

PACKAGE = Path(skydiff.__file__).resolve().parent

def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


MODULES = _modules()


def test_examples_found():
    assert "skydiff.advection" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, one_thread):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in finder.find(module, name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
