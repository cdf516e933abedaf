"""`Solution`: what `diffeqsolve` returns."""

from typing import Any

from jaxtyping import Array, PyTree, Real

from ._custom_types import RealScalarLike
from ._interpolation import AbstractPath, DenseInterpolation
from ._results import RESULTS


class Solution(AbstractPath):
    """The result of `diffeqsolve`.

    **Fields:**

    - `t0`, `t1`: the interval of the solve.
    - `ts`, `ys`: the saved times and outputs (see `SaveAt`), with the PyTree
      structure of `SaveAt.subs`; `None` where nothing was saved. Entries that were
      not reached (a failed solve, or unused `steps` slots) are `inf`.
    - `interpolation`: the dense output (with `SaveAt(dense=True)`), else `None`.
    - `stats`: `num_steps` (attempted, i.e. accepted + rejected),
      `num_accepted_steps`, `num_rejected_steps`, `max_steps`.
    - `result`: a `RESULTS` code.
    - `solver_state`, `controller_state`, `made_jump`: the final states, when
      requested with `SaveAt`.
    - `event_mask`: `None` (events are not supported yet).
    """

    t0: RealScalarLike
    t1: RealScalarLike
    ts: PyTree[Real[Array, " times"]] | None
    ys: PyTree[Array] | None
    interpolation: DenseInterpolation | None
    stats: dict[str, Any]
    result: RESULTS
    solver_state: PyTree | None
    controller_state: PyTree | None
    made_jump: Any
    event_mask: Any = None

    def _dense(self) -> DenseInterpolation:
        if self.interpolation is None:
            raise ValueError(
                "This solution has no dense output; solve with "
                "`saveat=SaveAt(dense=True)` to use `evaluate` or `derivative`."
            )
        return self.interpolation

    def evaluate(
        self, t0: RealScalarLike, t1: RealScalarLike | None = None, left: bool = True
    ) -> PyTree[Array]:
        """The solution at `t0`, or its increment from `t0` to `t1`, from the dense
        output (requires `SaveAt(dense=True)`)."""
        return self._dense().evaluate(t0, t1, left)

    def derivative(self, t: RealScalarLike, left: bool = True) -> PyTree[Array]:
        """The time derivative of the dense output at `t`. This differentiates the
        interpolant, so it approximates the vector field to the interpolant's order
        (requires `SaveAt(dense=True)`)."""
        return self._dense().derivative(t, left)
