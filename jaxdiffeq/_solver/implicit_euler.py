"""The implicit (backward) Euler method."""

from typing import ClassVar

import equinox as eqx
import jax.tree_util as jtu
import optimistix as optx

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interpolation import LocalLinearInterpolation
from .._misc import tree_add
from .._results import RESULTS
from .._root_finder import with_stepsize_controller_tols
from .._term import AbstractTerm
from .base import AbstractAdaptiveSolver, AbstractImplicitSolver
from .implicit import check_linearisable, failed_error, solve_stage


class ImplicitEuler(AbstractImplicitSolver, AbstractAdaptiveSolver):
    """The implicit Euler method, `y1 = y0 + f(t1, y1) h`.

    First order, L-stable: for stiff problems where low accuracy is enough, and as
    the simplest implicit method. Each step solves `z = f(t1, y0 + z) h` for the
    increment `z` with `root_finder` (default: `optimistix.Chord`, its Jacobian
    computed once per step, with the step-size controller's tolerances), starting
    from the explicit Euler increment `k0 = f(t0, y0) h`. The error estimate is
    `(z - k0) / 2`, the difference from the trapezoidal rule (order 2, so the
    step-size controller uses error order 2). Linear interpolation for dense
    output. Gradients through the stage equation use the implicit function
    theorem.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -1000.0 * (y - jnp.cos(t)))
    sol = jd.diffeqsolve(term, jd.ImplicitEuler(), 0.0, 1.0, 0.01, jnp.array(0.0),
                         stepsize_controller=jd.PIDController(rtol=1e-4, atol=1e-6))
    ```

    **Arguments:** `root_finder` and `root_find_max_steps` (see
    `AbstractImplicitSolver`).

    Not for accuracy: its error falls only linearly with the step size, so tight
    tolerances take very many steps.
    """

    root_finder: optx.AbstractRootFinder = eqx.field(
        default_factory=lambda: with_stepsize_controller_tols(optx.Chord)()
    )
    root_find_max_steps: int = eqx.field(default=10, static=True)

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 1

    def error_order(self, terms: AbstractTerm) -> int:
        del terms
        return 2

    def init(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> None:
        del terms, t0, t1, y0, args
        return None

    def step(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: None,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y, DenseInfo, None, RESULTS]:
        del solver_state, made_jump
        check_linearisable(terms, t1, y0, args)
        control = terms.contr(t0, t1)
        k0 = terms.prod(terms.vf(t0, y0, args), control)

        def residual(z, _):
            y1 = tree_add(y0, z)
            k1 = terms.prod(terms.vf(t1, y1, args), control)
            return jtu.tree_map(lambda a, b: a - b, z, k1)

        z, result = solve_stage(
            residual, k0, self.root_finder, self.root_find_max_steps
        )
        y1 = tree_add(y0, z)
        y_error = jtu.tree_map(lambda a, b: 0.5 * (a - b), z, k0)
        dense_info = dict(y0=y0, y1=y1)
        return y1, failed_error(y_error, result), dense_info, None, result

    def func(self, terms: AbstractTerm, t0: RealScalarLike, y0: Y, args: Args) -> VF:
        return terms.vf(t0, y0, args)
