"""Type aliases used in public signatures (jaxtyping)."""

from typing import Any

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PyTree, Real

RealScalarLike = float | int | Real[ArrayLike, ""]
FloatScalarLike = float | Float[ArrayLike, ""]
IntScalarLike = int | Int[ArrayLike, ""]
BoolScalarLike = bool | Bool[ArrayLike, ""]

Y = PyTree[Float[ArrayLike, "?*y"], "Y"]
VF = PyTree[Float[ArrayLike, "?*vf"], "VF"]
Control = PyTree[Float[ArrayLike, "?*control"], "C"]
Args = PyTree[Any]

DenseInfo = dict[str, PyTree[Array]]
DenseInfos = dict[str, PyTree[Array]]

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
