"""The public names of Diffrax 0.7.2: those jaxdiffeq offers are the same kind
of object with the same leading parameters, and docs/migrating-from-diffrax.md
lists exactly those it lacks. (The list itself is printed at the end of every
test run, see conftest.py.)"""

import inspect
import pathlib
import re

import diffrax
import pytest
from public_names import diffrax_public_names, missing_names

import jaxdiffeq

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
SHARED = [name for name in diffrax_public_names() if hasattr(jaxdiffeq, name)]

# Constructed by the library, not by users: their fields differ.
_INTERNAL_CONSTRUCTION = {"DenseInterpolation", "RESULTS"}


def _documented_missing() -> set[str]:
    text = (DOCS / "migrating-from-diffrax.md").read_text()
    section = text.split("<!-- missing-names -->")[1].split(
        "<!-- end missing-names -->"
    )[0]
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section))


def test_docs_list_the_missing_names():
    documented = _documented_missing()
    missing = set(missing_names())
    assert documented == missing, (
        f"listed but available: {sorted(documented - missing)}; "
        f"missing but not listed: {sorted(missing - documented)}"
    )


@pytest.mark.parametrize("name", SHARED)
def test_same_kind_of_object(name):
    ours, theirs = getattr(jaxdiffeq, name), getattr(diffrax, name)
    assert inspect.isclass(ours) == inspect.isclass(theirs)
    assert callable(ours) == callable(theirs)


def _parameters(obj) -> list[str]:
    return [
        p.name
        for p in inspect.signature(obj).parameters.values()
        if not p.name.startswith("_")
    ]


@pytest.mark.parametrize(
    "name",
    [
        name
        for name in SHARED
        if callable(getattr(diffrax, name)) and name not in _INTERNAL_CONSTRUCTION
    ],
)
def test_diffrax_parameters_come_first(name):
    """A Diffrax call, positional or by keyword, works unchanged: our parameters
    start with Diffrax's, in its order (ours may add more after them)."""
    ours, theirs = getattr(jaxdiffeq, name), getattr(diffrax, name)
    try:
        expected = _parameters(theirs)
    except (TypeError, ValueError):  # no signature (e.g. an abstract base)
        pytest.skip("no signature")
    assert _parameters(ours)[: len(expected)] == expected
