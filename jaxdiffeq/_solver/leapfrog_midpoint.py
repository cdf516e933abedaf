"""The leapfrog/midpoint method."""

from typing import ClassVar, TypeAlias

import jax.numpy as jnp
import jax.tree_util as jtu

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interpolation import LocalLinearInterpolation
from .._results import RESULTS
from .._term import AbstractTerm
from .base import AbstractReversibleSolver

# The previous point `(t_{n-1}, y_{n-1})`.
_SolverState: TypeAlias = tuple[RealScalarLike, Y]


class LeapfrogMidpoint(AbstractReversibleSolver):
    """The leapfrog/midpoint method, `y_{n+1} = y_{n-1} + (t_{n+1} - t_{n-1})
    f(t_n, y_n)`: a two-step method, reversible in closed form.

    Second order, one vector-field evaluation per step, no error estimate
    (constant steps). The solver state is the previous point `(t_{n-1},
    y_{n-1})`; it starts one explicit Euler step behind `t0`, so the first step is
    an explicit Euler step. Linear interpolation for dense output.

    Undone by `y_{n-1} = y_{n+1} - (t_{n+1} - t_{n-1}) f(t_n, y_n)`. The state does
    not record the size of the step before `t_{n-1}`, so `ReversibleAdjoint`
    requires constant step sizes with this solver.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.LeapfrogMidpoint(), 0.0, 1.0, 0.01,
                         jnp.array(1.0))
    ```

    Weakly unstable on decaying problems (a parasitic mode grows like
    `(-1)^n e^{|λ| t}`): for oscillatory or conservative problems only.

    Reference: L. F. Shampine, "Stability of the leapfrog/midpoint method",
    Applied Mathematics and Computation 208(1), 2009.
    """

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation
    constant_steps_only: ClassVar[bool] = True

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 2

    def init(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> _SolverState:
        # One Euler step back from t0: then the first two-step update is exactly
        # an Euler step forwards, and every step (the first included) is undone
        # by the same formula.
        back = terms.vf_prod(t0, y0, args, terms.contr(t1, t0))
        return 2 * jnp.asarray(t0) - t1, jtu.tree_map(lambda y, d: y + d, y0, back)

    def step(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: _SolverState,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, None, DenseInfo, _SolverState, RESULTS]:
        del made_jump
        tm1, ym1 = solver_state
        increment = terms.vf_prod(t0, y0, args, terms.contr(tm1, t1))
        y1 = jtu.tree_map(lambda y, d: y + d, ym1, increment)
        dense_info = dict(y0=y0, y1=y1)
        return y1, None, dense_info, (t0, y0), RESULTS.successful

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
        t0_state, y0 = solver_state
        del t0_state  # equal to t0
        tm1 = 2 * jnp.asarray(t0) - t1
        increment = terms.vf_prod(t0, y0, args, terms.contr(tm1, t1))
        ym1 = jtu.tree_map(lambda y, d: y - d, y1, increment)
        dense_info = dict(y0=y0, y1=y1)
        return y0, dense_info, (tm1, ym1), RESULTS.successful

    def func(self, terms: AbstractTerm, t0: RealScalarLike, y0: Y, args: Args) -> VF:
        return terms.vf(t0, y0, args)
