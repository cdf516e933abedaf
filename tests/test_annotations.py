"""Every public signature carries type annotations: the functions `jaxdiffeq`
exports, the constructors of its classes and the public methods they define,
including the extension protocols users implement (`AbstractSolver.step`, the
controllers' `adapt_step_size`, `AbstractTerm`, `AbstractAdjoint.loop`).
(`pyright` checks in `make test` that the annotations agree with the code and
with each other; this test checks that they are there.)"""

import enum
import inspect

import pytest

import jaxdiffeq


def _public_objects():
    seen = set()
    for name in sorted(dir(jaxdiffeq)):
        obj = getattr(jaxdiffeq, name)
        if name.startswith("_") or id(obj) in seen:
            continue
        seen.add(id(obj))
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj) and obj.__module__.startswith("jaxdiffeq"):
            yield name, obj


def _signatures():
    """(where, function, is_constructor) for every public signature."""
    for name, obj in _public_objects():
        if inspect.isfunction(obj):
            yield name, obj, False
            continue
        if not issubclass(obj, enum.Enum):  # (members are not constructed by users)
            yield f"{name}.__init__", obj.__init__, True
        for cls in obj.__mro__:
            if not cls.__module__.startswith("jaxdiffeq"):
                continue
            for method, function in vars(cls).items():
                if method.startswith("_") or not inspect.isfunction(function):
                    continue
                yield f"{cls.__name__}.{method}", function, False


def _unannotated(function, is_constructor) -> list[str]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []
    missing = [
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.name not in ("self", "cls")
        and parameter.annotation is inspect.Parameter.empty
    ]
    if not is_constructor and signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


SIGNATURES = sorted({where: (f, c) for where, f, c in _signatures()}.items())


def test_the_public_api_is_found():
    wheres = {where for where, _ in SIGNATURES}
    for expected in (
        "diffeqsolve",
        "AbstractSolver.step",
        "AbstractStepSizeController.adapt_step_size",
        "AbstractTerm.vf",
        "AbstractAdjoint.loop",
        "Tsit5.__init__",
        "PIDController.__init__",
    ):
        assert expected in wheres


@pytest.mark.parametrize(
    "where, function, is_constructor",
    [(where, f, c) for where, (f, c) in SIGNATURES],
    ids=[where for where, _ in SIGNATURES],
)
def test_signature_is_annotated(where, function, is_constructor):
    missing = _unannotated(function, is_constructor)
    assert not missing, f"{where}: no annotation for {', '.join(missing)}"
