"""Kværnø's 4(3) ESDIRK method."""

from typing import ClassVar

import numpy as np

from .._term import AbstractTerm
from .butcher import ButcherTableau
from .dirk import AbstractESDIRK

# Coefficients: A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with
# an explicit first stage", BIT Numerical Mathematics 44 (2004), 489–502: the
# 4(3) method with gamma = 0.5728160625. Stiffly accurate: the last row of
# `a` is `b_sol`, so the last stage is evaluated at (t1, y1).
_GAMMA = 0.5728160625
_tableau = ButcherTableau(
    c=np.array([1.145632125, 0.5971049876806123, 1.0, 1.0]),
    b_sol=np.array(
        [
            0.1972165483210286,
            0.1768437839066134,
            0.8154421814035516,
            -0.762318576131193,
            0.5728160625,
        ]
    ),
    b_error=np.array(
        [
            -0.06538674195294933,
            0.4887481113213983,
            0.33895720676274393,
            -1.3351346386311929,
            0.5728160625,
        ]
    ),
    a_lower=(
        np.array([0.5728160625]),
        np.array([0.16723546204189954, -0.14294653686128728]),
        np.array([0.26260329027397794, -0.3119043274147849, 0.4764849746408077]),
        np.array(
            [
                0.1972165483210286,
                0.1768437839066134,
                0.8154421814035516,
                -0.762318576131193,
            ]
        ),
    ),
    a_diagonal=np.array([0.0] + [_GAMMA] * 4),
)


class Kvaerno4(AbstractESDIRK):
    """Kværnø's 4(3) method: an ESDIRK method of order 4 with an embedded
    order-3 error estimate, 5 stages (the first explicit, 4 implicit with the
    same diagonal entry gamma = 0.5728), L-stable and stiffly accurate, for
    stiff problems. Cubic Hermite dense output.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -1000.0 * (y - jnp.cos(t)))
    sol = jd.diffeqsolve(term, jd.Kvaerno4(), 0.0, 1.0, 0.01, jnp.array(0.0),
                         stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8))
    ```

    **Arguments:** `root_finder` and `root_find_max_steps` (see `AbstractDIRK`);
    `scan_kind` as for `AbstractRungeKutta`.

    Reference: A. Kværnø, BIT Numerical Mathematics 44 (2004), 489–502.
    Not for non-stiff problems: an explicit method (`Tsit5`) is cheaper there.
    """

    tableau: ClassVar[ButcherTableau] = _tableau

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 4
