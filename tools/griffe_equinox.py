"""A Griffe extension for the API reference: the constructors of equinox
Modules. Equinox turns a Module's annotated fields into a dataclass `__init__`
at class creation, which Griffe's static analysis cannot see (its dataclass
support looks for the `@dataclass` decorator), so the reference would show
classes like `PIDController` without their parameters. This extension takes
the constructor's parameters, their order and defaults from the imported class
(`inspect.signature`) and their annotations from the source where they are
written there (aliases such as `RealScalarLike` stay readable)."""

import importlib
import inspect
from typing import Any

import equinox as eqx
import griffe

_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _runtime_class(cls: griffe.Class) -> Any:
    module = importlib.import_module(cls.module.path)
    return getattr(module, cls.name, None)


def _static_annotation(cls: griffe.Class, name: str) -> Any:
    member = cls.all_members.get(name)
    if isinstance(member, griffe.Alias) or member is None:
        return None
    return getattr(member, "annotation", None)


def _default(parameter: inspect.Parameter) -> str | None:
    if parameter.default is inspect.Parameter.empty:
        return None
    default = parameter.default
    text = default.__name__ if inspect.isfunction(default) else repr(default)
    return text if len(text) <= 60 else "..."


def _set_init(cls: griffe.Class, runtime: type) -> None:
    signature = inspect.signature(runtime)
    parameters = [
        griffe.Parameter(
            "self", annotation=None, kind=griffe.ParameterKind.positional_or_keyword
        )
    ]
    for parameter in signature.parameters.values():
        annotation = _static_annotation(cls, parameter.name)
        if annotation is None and parameter.annotation is not inspect.Parameter.empty:
            annotation = inspect.formatannotation(parameter.annotation)
        parameters.append(
            griffe.Parameter(
                parameter.name,
                annotation=annotation,
                kind=_KINDS[parameter.kind],
                default=_default(parameter),
            )
        )
    init = griffe.Function(
        "__init__",
        lineno=0,
        endlineno=0,
        parent=cls,
        parameters=griffe.Parameters(*parameters),
        returns="None",
    )
    cls.set_member("__init__", init)


def _visit(obj: griffe.Module | griffe.Class) -> None:
    for member in list(obj.members.values()):
        if member.is_alias:
            continue
        if isinstance(member, griffe.Class):
            runtime = _runtime_class(member)
            own_init = "__init__" in member.members
            if (
                not own_init
                and inspect.isclass(runtime)
                and issubclass(runtime, eqx.Module)
            ):
                _set_init(member, runtime)
            _visit(member)
        elif isinstance(member, griffe.Module):
            _visit(member)


class EquinoxModules(griffe.Extension):
    """Give every equinox Module without a written `__init__` the constructor
    equinox generates for it."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _visit(pkg)
