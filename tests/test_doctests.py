"""Every example in the package's docstrings runs and prints what it says (every module, found by walking
the package, so a new module's examples run without being listed here)."""

import doctest
import importlib
import pkgutil

import pytest

import nelu

MODULES = sorted(m.name for m in pkgutil.walk_packages(nelu.__path__, "nelu.") if not m.name.endswith("__main__"))


def test_the_walk_finds_the_package():
    assert {"nelu.functional", "nelu.training", "nelu.experiments.common", "nelu.baselines"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, extraglobs={"torch": importlib.import_module("torch")})
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
