"""Whitaker and Kar's implicit–explicit method for fast–slow wave problems."""

from typing import ClassVar

import numpy as np

from .._term import AbstractTerm
from .butcher import ButcherTableau, MultiButcherTableau
from .dirk import AbstractDIRK

# Coefficients: J. S. Whitaker and S. K. Kar, "Implicit–explicit Runge–Kutta
# methods for fast–slow wave problems", Monthly Weather Review 141 (2013),
# 3426–3434: a four-stage explicit tableau (third order) paired with an
# implicit one whose diagonal is (0, 1/6, 1/3, 1/4); the error estimate is that
# of an embedded second-order (Heun) method.
_explicit = ButcherTableau(
    c=np.array([0.3333333333333333, 0.6666666666666666, 1.0]),
    b_sol=np.array([0.5, -0.5, 1.0, 0.0]),
    b_error=np.array([0.0, 0.5, -1.0, 0.5]),
    a_lower=(
        np.array([0.3333333333333333]),
        np.array([0.16666666666666666, 0.5]),
        np.array([0.5, -0.5, 1.0]),
    ),
)
_implicit = ButcherTableau(
    c=np.array([0.3333333333333333, 0.6666666666666666, 1.0]),
    b_sol=np.array([0.375, 0.0, 0.375, 0.25]),
    b_error=np.array([0.125, 0.0, -0.375, 0.25]),
    a_lower=(
        np.array([0.16666666666666666]),
        np.array([0.3333333333333333, 0.0]),
        np.array([0.375, 0.0, 0.375]),
    ),
    a_diagonal=np.array([0.0, 0.16666666666666666, 0.3333333333333333, 0.25]),
    a_predictor=(
        np.array([1.0]),
        np.array([-1.0, 2.0]),
        np.array([-1.0, 2.0, 0.0]),
    ),
)


class Sil3(AbstractDIRK):
    """Whitaker and Kar's implicit–explicit (IMEX) method for fast–slow wave
    problems: third order in the explicit term, second in the implicit one
    (order 2 overall), 4 stages, with an embedded second-order error estimate.
    Its diagonal entries differ from stage to stage, so each stage factorises
    its own Newton matrix (the Jacobian itself is kept across stages and
    steps).

    Call it with `terms=MultiTerm(explicit_term, implicit_term)`; a single term
    is refused.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    slow = jd.ODETerm(lambda t, y, args: jnp.sin(t) * jnp.ones_like(y))
    stiff = jd.ODETerm(lambda t, y, args: -1000.0 * y)
    sol = jd.diffeqsolve(jd.MultiTerm(slow, stiff), jd.Sil3(), 0.0, 1.0, 0.01,
                         jnp.array([1.0]),
                         stepsize_controller=jd.PIDController(rtol=1e-5, atol=1e-7))
    ```

    **Arguments:** `root_finder` and `root_find_max_steps` (see `AbstractDIRK`);
    `scan_kind` as for `AbstractRungeKutta`. Dense output: cubic Hermite between
    the step's ends.

    Reference: J. S. Whitaker and S. K. Kar, Monthly Weather Review 141 (2013),
    3426–3434.
    """

    tableau: ClassVar = MultiButcherTableau(_explicit, _implicit)

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 2
