"""The reversible Heun method."""

from typing import ClassVar, TypeAlias

import jax.tree_util as jtu

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interpolation import LocalLinearInterpolation
from .._results import RESULTS
from .._term import AbstractTerm
from .base import (
    AbstractAdaptiveSolver,
    AbstractReversibleSolver,
    AbstractStratonovichSolver,
)

# The auxiliary state `ŷ` and the vector field `f(t, ŷ)` there.
_SolverState: TypeAlias = tuple[Y, VF]


class ReversibleHeun(
    AbstractAdaptiveSolver, AbstractReversibleSolver, AbstractStratonovichSolver
):
    """The reversible Heun method: a trapezoidal step driven by an auxiliary
    state, algebraically reversible at one vector-field evaluation per step.

    With the auxiliary state `ŷ` (starting at `y0`) and `f_n = f(t_n, ŷ_n)`:

    ```
    ŷ1 = 2 y0 - ŷ0 + f0 h
    y1 = y0 + (f0 + f1) h / 2
    ```

    Undone in closed form: `ŷ0 = 2 y1 - ŷ1 - f1 h`, then
    `y1 - (f0 + f1) h / 2 = y0` with `f0 = f(t0, ŷ0)`. Second order on ODEs,
    strong order 0.5 on SDEs (converges to the Stratonovich solution);
    `(f1 - f0) h / 2` is its error estimate, so adaptive steps work. Linear
    interpolation for dense output. The solver state is `(ŷ, f)`.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.ReversibleHeun(), 0.0, 1.0, 0.01, jnp.array(1.0),
                         adjoint=jd.ReversibleAdjoint())
    ```

    Its stability region is small (it is a two-step method in disguise): not for
    stiff or strongly damped problems.

    Reference: P. Kidger, J. Foster, X. Li, T. Lyons, "Efficient and accurate
    gradients for neural SDEs", NeurIPS 2021, arXiv:2105.13493.
    """

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 2

    def strong_order(self, terms: AbstractTerm) -> float:
        del terms
        return 0.5

    def init(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> _SolverState:
        del t1
        return y0, terms.vf(t0, y0, args)

    def step(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: _SolverState,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y, DenseInfo, _SolverState, RESULTS]:
        del made_jump
        yhat0, f0 = solver_state
        control = terms.contr(t0, t1)
        yhat1 = jtu.tree_map(
            lambda y, yh, d: 2 * y - yh + d, y0, yhat0, terms.prod(f0, control)
        )
        f1 = terms.vf(t1, yhat1, args)
        f_sum = jtu.tree_map(lambda a, b: a + b, f0, f1)
        f_diff = jtu.tree_map(lambda a, b: b - a, f0, f1)
        y1 = jtu.tree_map(lambda y, d: y + 0.5 * d, y0, terms.prod(f_sum, control))
        y_error = jtu.tree_map(lambda d: 0.5 * d, terms.prod(f_diff, control))
        dense_info = dict(y0=y0, y1=y1)
        return y1, y_error, dense_info, (yhat1, f1), RESULTS.successful

    def backward_step(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y1: Y,
        args: Args,
        solver_state: _SolverState,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, DenseInfo, _SolverState, RESULTS]:
        del made_jump
        yhat1, f1 = solver_state
        control = terms.contr(t0, t1)
        yhat0 = jtu.tree_map(
            lambda y, yh, d: 2 * y - yh - d, y1, yhat1, terms.prod(f1, control)
        )
        f0 = terms.vf(t0, yhat0, args)
        f_sum = jtu.tree_map(lambda a, b: a + b, f0, f1)
        y0 = jtu.tree_map(lambda y, d: y - 0.5 * d, y1, terms.prod(f_sum, control))
        dense_info = dict(y0=y0, y1=y1)
        return y0, dense_info, (yhat0, f0), RESULTS.successful

    def func(self, terms: AbstractTerm, t0: RealScalarLike, y0: Y, args: Args) -> VF:
        return terms.vf(t0, y0, args)
