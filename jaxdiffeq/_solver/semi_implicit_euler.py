"""The semi-implicit (symplectic) Euler method."""

from typing import ClassVar

import jax.tree_util as jtu

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interpolation import LocalLinearInterpolation
from .._results import RESULTS
from .._term import AbstractTerm
from .base import AbstractReversibleSolver


class SemiImplicitEuler(AbstractReversibleSolver):
    """The semi-implicit (symplectic) Euler method for a partitioned system
    `dy_1/dt = f_1(t, y_2)`, `dy_2/dt = f_2(t, y_1)`:

    ```
    y_1' = y_1 + h f_1(t0, y_2)
    y_2' = y_2 + h f_2(t0, y_1')
    ```

    First order, symplectic for separable Hamiltonian systems, explicit despite
    its name, two vector-field evaluations per step, no error estimate (constant
    steps). Reversible in closed form (undo the second update, then the first).
    Takes `terms=(term_1, term_2)` and `y0=(y0_1, y0_2)`. Linear interpolation for
    dense output.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    # The harmonic oscillator: q' = p, p' = -q.
    terms = (jd.ODETerm(lambda t, p, args: p), jd.ODETerm(lambda t, q, args: -q))
    sol = jd.diffeqsolve(terms, jd.SemiImplicitEuler(), 0.0, 1.0, 0.01,
                         (jnp.array(1.0), jnp.array(0.0)))
    ```
    """

    term_structure: ClassVar = (AbstractTerm, AbstractTerm)
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def order(self, terms: tuple[AbstractTerm, AbstractTerm]) -> int:
        del terms
        return 1

    def init(
        self,
        terms: tuple[AbstractTerm, AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: tuple[Y, Y],
        args: Args,
    ) -> None:
        del terms, t0, t1, y0, args
        return None

    def step(
        self,
        terms: tuple[AbstractTerm, AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: tuple[Y, Y],
        args: Args,
        solver_state: None,
        made_jump: BoolScalarLike,
    ) -> tuple[tuple[Y, Y], None, DenseInfo, None, RESULTS]:
        del solver_state, made_jump
        term_1, term_2 = terms
        y0_1, y0_2 = y0
        d1 = term_1.vf_prod(t0, y0_2, args, term_1.contr(t0, t1))
        y1_1 = jtu.tree_map(lambda y, d: y + d, y0_1, d1)
        d2 = term_2.vf_prod(t0, y1_1, args, term_2.contr(t0, t1))
        y1_2 = jtu.tree_map(lambda y, d: y + d, y0_2, d2)
        y1 = (y1_1, y1_2)
        return y1, None, dict(y0=y0, y1=y1), None, RESULTS.successful

    def backward_step(
        self,
        terms: tuple[AbstractTerm, AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y1: tuple[Y, Y],
        args: Args,
        solver_state: None,
        made_jump: BoolScalarLike,
    ) -> tuple[tuple[Y, Y], DenseInfo, None, RESULTS]:
        del solver_state, made_jump
        term_1, term_2 = terms
        y1_1, y1_2 = y1
        d2 = term_2.vf_prod(t0, y1_1, args, term_2.contr(t0, t1))
        y0_2 = jtu.tree_map(lambda y, d: y - d, y1_2, d2)
        d1 = term_1.vf_prod(t0, y0_2, args, term_1.contr(t0, t1))
        y0_1 = jtu.tree_map(lambda y, d: y - d, y1_1, d1)
        y0 = (y0_1, y0_2)
        return y0, dict(y0=y0, y1=y1), None, RESULTS.successful

    def func(
        self,
        terms: tuple[AbstractTerm, AbstractTerm],
        t0: RealScalarLike,
        y0: tuple[Y, Y],
        args: Args,
    ) -> tuple[VF, VF]:
        term_1, term_2 = terms
        y0_1, y0_2 = y0
        return term_1.vf(t0, y0_2, args), term_2.vf(t0, y0_1, args)
