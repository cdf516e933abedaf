"""Type aliases used in public signatures (jaxtyping)."""

from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PyTree, Real, Shaped

RealScalarLike: TypeAlias = float | int | Real[ArrayLike, ""]
FloatScalarLike: TypeAlias = float | Float[ArrayLike, ""]
IntScalarLike: TypeAlias = int | Int[ArrayLike, ""]
BoolScalarLike: TypeAlias = bool | Bool[ArrayLike, ""]

# Shaped, not Float: complex states are solved too, as in Diffrax.
Y: TypeAlias = PyTree[Shaped[ArrayLike, "?*y"], "Y"]
VF: TypeAlias = PyTree[Shaped[ArrayLike, "?*vf"], "VF"]
Control: TypeAlias = PyTree[Shaped[ArrayLike, "?*control"]]
Args: TypeAlias = PyTree[Any]

DenseInfo: TypeAlias = dict[str, PyTree[Array]]
DenseInfos: TypeAlias = dict[str, PyTree[Array]]

__all__ = [
    "Args",
    "BoolScalarLike",
    "Control",
    "DenseInfo",
    "DenseInfos",
    "FloatScalarLike",
    "IntScalarLike",
    "RealScalarLike",
    "VF",
    "Y",
]
