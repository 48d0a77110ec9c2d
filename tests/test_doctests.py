"""The examples in the package's docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["nelu.functional", "nelu.nn", "nelu.reference", "nelu.metrics"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, extraglobs={"torch": importlib.import_module("torch")})
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
    assert result.attempted > 0 or name == "nelu.metrics"
