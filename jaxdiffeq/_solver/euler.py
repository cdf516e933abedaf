"""The explicit Euler method."""

from typing import ClassVar

import jax.tree_util as jtu

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interpolation import LocalLinearInterpolation
from .._results import RESULTS
from .._term import AbstractTerm
from .base import AbstractItoSolver


class Euler(AbstractItoSolver):
    """The explicit Euler method, `y1 = y0 + f(t0, y0) h`.

    First order, one vector-field evaluation per step, no error estimate (so it
    takes constant steps; wrap it in `HalfSolver` for adaptive steps). Linear
    interpolation for dense output. Applied to an SDE it is the Euler–Maruyama
    method (Itô).

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Euler(), 0.0, 1.0, 0.01, jnp.array(1.0))
    ```

    Not for accuracy: a higher-order method (`Tsit5`) reaches a given error with far
    fewer steps.
    """

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 1

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
    ) -> tuple[Y, None, DenseInfo, None, RESULTS]:
        del solver_state, made_jump
        control = terms.contr(t0, t1)
        increment = terms.vf_prod(t0, y0, args, control)
        y1 = jtu.tree_map(lambda y, dy: y + dy, y0, increment)
        return y1, None, dict(y0=y0, y1=y1), None, RESULTS.successful

    def func(self, terms: AbstractTerm, t0: RealScalarLike, y0: Y, args: Args) -> VF:
        return terms.vf(t0, y0, args)
