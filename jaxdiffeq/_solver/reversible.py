"""`Reversible`: any explicit single-step solver made algebraically reversible by
carrying a second state (McCallum and Foster's coupled (y, z) scheme)."""

import functools

import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interpolation import AbstractLocalInterpolation, _fraction, _ValueOnStep
from .._misc import scale
from .._results import RESULTS, update_result
from .._term import AbstractTerm
from .base import (
    AbstractImplicitSolver,
    AbstractReversibleSolver,
    AbstractSolver,
    AbstractWrappedSolver,
    is_directly,
)


class _CoupledInterpolation(_ValueOnStep):
    """Dense output of a `Reversible` step: the wrapped solver's interpolant of its
    step from `z0`, shifted onto `y`.

    With `P(s)` the wrapped solver's interpolant at the step fraction `s`
    (`P(0) = z0`, `P(1) = z0 + Phi_h(t0, z0)`) and `d = y0 - z0`,
    `y(s) = P(s) + (1 - s (1 - coupling)) d`: it starts at `y0` and ends at
    `y1 = coupling y0 + (1 - coupling) z0 + Phi_h(t0, z0)`, and is as accurate as
    `P` (the coupling term is linear in `s`).
    """

    t0: RealScalarLike
    t1: RealScalarLike
    inner: AbstractLocalInterpolation
    offset: Y  # y0 - z0
    coupling: float

    def _at(self, t: RealScalarLike, left: bool) -> PyTree[Array]:
        s = _fraction(t, self.t0, self.t1)
        weight = 1 - s * (1 - self.coupling)
        return jtu.tree_map(
            lambda p, d: (p + scale(weight, d)).astype(p.dtype),
            self.inner.evaluate(t, left=left),
            self.offset,
        )


def _coupled_interpolation(inner_cls, coupling, *, t0, t1, inner, offset):
    return _CoupledInterpolation(
        t0=t0,
        t1=t1,
        inner=inner_cls(t0=t0, t1=t1, **inner),
        offset=offset,
        coupling=coupling,
    )


class Reversible(AbstractReversibleSolver, AbstractWrappedSolver):
    """Makes any explicit single-step solver algebraically reversible, so that
    `ReversibleAdjoint` can differentiate through it in constant memory.

    The solver's increment `Phi_h(t, y) = step(t, t + h, y) - y` drives two
    coupled states `(y, z)`, both starting at `y0`:

    ```
    y1 = coupling y0 + (1 - coupling) z0 + Phi_h(t0, z0)
    z1 = z0 - Phi_{-h}(t1, y1)
    ```

    and the step is undone in closed form: `z0 = z1 + Phi_{-h}(t1, y1)`, then
    `y0 = (y1 - (1 - coupling) z0 - Phi_h(t0, z0)) / coupling`. The solution is
    `y`; `z` is the solver state. Each step costs two steps of the wrapped solver
    (one forwards, one backwards in time). The order of convergence is the
    wrapped solver's. The error estimate (when the wrapped solver has one) is the
    sum of the two steps' estimates, so adaptive step sizes work. Dense output
    shifts the wrapped solver's interpolant onto `y` (same order).

    Solver state such as a first-same-as-last stage cannot be carried across
    steps (the next step starts from a different point); it is rebuilt with the
    wrapped solver's `init` at each step, so first-same-as-last methods (`Tsit5`,
    `Dopri5`) cost one evaluation more per step than on their own. The wrapped
    solver object is not modified.

    **Arguments:**

    - `solver`: the solver to wrap: an explicit single-step method (`Euler`,
      any Runge–Kutta method, `HalfSolver(...)`). Already reversible solvers
      (`ReversibleHeun`, ...) and implicit solvers are rejected with a
      `ValueError`.
    - `coupling`: `λ` in `(0, 1]`, default `0.999`. `1` is the plain scheme;
      smaller values damp the spurious mode of the coupled pair. The inverse
      divides by `λ`, so reconstruction amplifies rounding by about `λ^-n` over
      `n` steps; see docs/choosing-an-adjoint.md.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Reversible(jd.Tsit5()), 0.0, 1.0, 0.1,
                         jnp.array(1.0))
    ```

    `ReversibleAdjoint` wraps a solver in `Reversible` itself; build one directly
    to choose `coupling`, or to solve with the same numbers under another adjoint.

    Reference: S. McCallum, J. Foster, "Efficient, accurate and stable gradients
    for neural ODEs", arXiv:2410.11648 (2024).
    """

    solver: AbstractSolver
    coupling: float = 0.999

    def __check_init__(self):
        if not isinstance(self.solver, AbstractSolver):
            raise TypeError(f"`Reversible` wraps a solver, got {self.solver!r}.")
        if is_directly(self.solver, AbstractReversibleSolver):
            raise ValueError(
                f"`{type(self.solver).__name__}` is already reversible; use it "
                "directly (`ReversibleAdjoint` accepts it as it is)."
            )
        if isinstance(self.solver, AbstractImplicitSolver):
            raise ValueError(
                f"`Reversible` cannot wrap the implicit solver "
                f"`{type(self.solver).__name__}`: its steps are not explicit "
                "functions of the state. Use an explicit solver."
            )
        coupling = float(self.coupling)
        if not 0.0 < coupling <= 1.0:
            raise ValueError(
                f"`Reversible(coupling=...)` must lie in (0, 1], got {coupling}."
            )

    @property
    def term_structure(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore[reportIncompatibleMethodOverride]
        return functools.partial(
            _coupled_interpolation, self.solver.interpolation_cls, self.coupling
        )

    def order(self, terms: PyTree[AbstractTerm]) -> int | None:
        return self.solver.order(terms)

    def strong_order(self, terms: PyTree[AbstractTerm]) -> float | None:
        return self.solver.strong_order(terms)

    def error_order(self, terms: PyTree[AbstractTerm]) -> float | None:
        return self.solver.error_order(terms)

    def init(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> Y:
        del terms, t0, t1, args
        return y0

    def increment(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> tuple[Y, Y | None, DenseInfo, RESULTS]:
        """`Phi(t0 -> t1, y0)`, the wrapped solver's step from a fresh state (its
        `init` at `(t0, y0)`): `(y1 - y0, y_error, dense_info, result)`."""
        state = self.solver.init(terms, t0, t1, y0, args)
        y1, y_error, dense_info, _, result = self.solver.step(
            terms, t0, t1, y0, args, state, False
        )
        increment = jtu.tree_map(lambda a, b: a - b, y1, y0)
        return increment, y_error, dense_info, result

    def step(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: Y,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y | None, DenseInfo, Y, RESULTS]:
        del made_jump
        lam = self.coupling
        z0 = solver_state
        forward, error_f, inner_info, result_f = self.increment(terms, t0, t1, z0, args)
        y1 = jtu.tree_map(
            lambda y, z, dz: (lam * y + (1 - lam) * z + dz).astype(y.dtype),
            y0,
            z0,
            forward,
        )
        backward, error_b, _, result_b = self.increment(terms, t1, t0, y1, args)
        z1 = jtu.tree_map(lambda z, dz: z - dz, z0, backward)
        if error_f is None or error_b is None:
            y_error = None
        else:
            y_error = jtu.tree_map(
                lambda a, b: jnp.abs(a) + jnp.abs(b), error_f, error_b
            )
        dense_info = dict(
            inner=inner_info, offset=jtu.tree_map(lambda y, z: y - z, y0, z0)
        )
        return y1, y_error, dense_info, z1, update_result(result_f, result_b)

    def backward_step(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y1: Y,
        args: Args,
        solver_state: Y,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, DenseInfo, Y, RESULTS]:
        del made_jump
        lam = self.coupling
        z1 = solver_state
        backward, _, _, result_b = self.increment(terms, t1, t0, y1, args)
        z0 = jtu.tree_map(lambda z, dz: z + dz, z1, backward)
        forward, _, inner_info, result_f = self.increment(terms, t0, t1, z0, args)
        y0 = jtu.tree_map(
            lambda y, z, dz: ((y - (1 - lam) * z - dz) / lam).astype(y.dtype),
            y1,
            z0,
            forward,
        )
        dense_info = dict(
            inner=inner_info, offset=jtu.tree_map(lambda y, z: y - z, y0, z0)
        )
        return y0, dense_info, z0, update_result(result_b, result_f)

    def func(
        self, terms: PyTree[AbstractTerm], t0: RealScalarLike, y0: Y, args: Args
    ) -> VF:
        return self.solver.func(terms, t0, y0, args)
