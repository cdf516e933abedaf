"""Type aliases used in public signatures (jaxtyping)."""

from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PyTree, Real

RealScalarLike: TypeAlias = float | int | Real[ArrayLike, ""]
FloatScalarLike: TypeAlias = float | Float[ArrayLike, ""]
IntScalarLike: TypeAlias = int | Int[ArrayLike, ""]
BoolScalarLike: TypeAlias = bool | Bool[ArrayLike, ""]

Y: TypeAlias = PyTree[Float[ArrayLike, "?*y"], "Y"]
VF: TypeAlias = PyTree[Float[ArrayLike, "?*vf"], "VF"]
Control: TypeAlias = PyTree[Float[ArrayLike, "?*control"]]
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
