"""`HalfSolver`: adaptive steps for any solver by step doubling."""

import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._results import RESULTS, update_result
from .._term import AbstractTerm
from .base import (
    AbstractAdaptiveSolver,
    AbstractSolver,
    AbstractWrappedSolver,
    SolverState,
)


class HalfSolver(AbstractAdaptiveSolver, AbstractWrappedSolver):
    """Makes any solver adaptive by step doubling (Richardson's error estimate).

    Each step is taken once with size `h` and again as two steps of size `h/2`;
    the two-half-step result is returned and the difference between the two is the
    error estimate. This triples the cost of a step.

    **Arguments:** `solver`, the solver to wrap.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.HalfSolver(jd.Euler()), 0.0, 1.0, 0.1,
                         jnp.array(1.0),
                         stepsize_controller=jd.PIDController(rtol=1e-3, atol=1e-6))
    ```

    Prefer a method with an embedded error estimate (`Heun`, `Tsit5`) when one
    exists: it costs no extra evaluations.
    """

    solver: AbstractSolver

    @property
    def term_structure(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore[reportIncompatibleMethodOverride]
        return self.solver.interpolation_cls

    def order(self, terms: PyTree[AbstractTerm]) -> int | None:
        return self.solver.order(terms)

    def strong_order(self, terms: PyTree[AbstractTerm]) -> float | None:
        return self.solver.strong_order(terms)

    def error_order(self, terms: PyTree[AbstractTerm]) -> float | None:
        # The step-doubling estimate is the local error of the method itself,
        # O(h^(p+1)); not the embedded-pair exponent of the wrapped solver.
        order = self.solver.order(terms)
        return None if order is None else order + 1

    def init(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> SolverState:
        return self.solver.init(terms, t0, t1, y0, args)

    def step(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: SolverState,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y | None, DenseInfo, SolverState, RESULTS]:
        tmid = t0 + 0.5 * jnp.subtract(t1, t0)
        y_full, _, dense_info, _, result_full = self.solver.step(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        y_mid, _, _, mid_state, result_mid = self.solver.step(
            terms, t0, tmid, y0, args, solver_state, made_jump
        )
        y1, _, _, state, result = self.solver.step(
            terms, tmid, t1, y_mid, args, mid_state, False
        )
        y_error = jtu.tree_map(lambda a, b: a - b, y1, y_full)
        # Dense output: the full step's interpolant, ending at the accurate y1.
        dense_info = dict(dense_info, y1=y1)
        result = update_result(update_result(result_full, result_mid), result)
        return y1, y_error, dense_info, state, result

    def func(
        self, terms: PyTree[AbstractTerm], t0: RealScalarLike, y0: Y, args: Args
    ) -> VF:
        return self.solver.func(terms, t0, y0, args)
