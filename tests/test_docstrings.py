"""Every ```python example in the docstrings of the public API runs."""

import inspect
import re
import textwrap

import pytest

import jaxdiffeq

_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _public_objects():
    """(name, object) for the public classes and functions defined in jaxdiffeq."""
    for name in sorted(dir(jaxdiffeq)):
        if name.startswith("_"):
            continue
        obj = getattr(jaxdiffeq, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not getattr(obj, "__module__", "").startswith("jaxdiffeq"):
            continue
        yield name, obj


def _docstrings(obj):
    """The docstring of `obj` and, for a class, of the members it defines."""
    docs = [inspect.getdoc(obj) or ""]
    if inspect.isclass(obj):
        for member in vars(obj).values():
            if isinstance(member, (classmethod, staticmethod)):
                member = member.__func__
            if inspect.isfunction(member) or isinstance(member, property):
                docs.append(inspect.getdoc(member) or "")
    return docs


def _examples():
    examples = []
    for name, obj in _public_objects():
        blocks = [block for doc in _docstrings(obj) for block in _BLOCK.findall(doc)]
        for i, block in enumerate(blocks):
            examples.append(pytest.param(textwrap.dedent(block), id=f"{name}-{i}"))
    return examples


EXAMPLES = _examples()


@pytest.mark.parametrize("code", EXAMPLES)
def test_docstring_example_runs(code):
    exec(compile(code, "<docstring>", "exec"), {})


def test_examples_were_found():
    """Guards the extraction: the main entry points document a runnable example."""
    names = {param.id.rsplit("-", 1)[0] for param in EXAMPLES}
    expected = {
        "diffeqsolve",
        "ODETerm",
        "SaveAt",
        "ConstantStepSize",
        "StepTo",
        "PIDController",
        "Euler",
        "Heun",
        "Midpoint",
        "Ralston",
        "Bosh3",
        "Tsit5",
        "Dopri5",
        "Dopri8",
        "HalfSolver",
    }
    assert expected <= names, expected - names
