"""Kværnø's 5(4) ESDIRK method."""

from typing import ClassVar

import numpy as np

from .._term import AbstractTerm
from .butcher import ButcherTableau
from .dirk import AbstractESDIRK

# Coefficients: A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with
# an explicit first stage", BIT Numerical Mathematics 44 (2004), 489–502: the
# 5(4) method with gamma = 0.26. Stiffly accurate: the last row of
# `a` is `b_sol`, so the last stage is evaluated at (t1, y1).
_GAMMA = 0.26
_tableau = ButcherTableau(
    c=np.array(
        [0.52, 1.230333209967908, 0.8957659843500759, 0.43639360985864756, 1.0, 1.0]
    ),
    b_sol=np.array(
        [
            0.13659751177640292,
            0.0,
            -0.05496908796538376,
            -0.04118626728321046,
            0.629933048990164,
            0.06962479448202728,
            0.26,
        ]
    ),
    b_error=np.array(
        [
            -0.0019588905362793174,
            0.0,
            -0.012515715947863326,
            -0.06565284626324187,
            0.010502658265357234,
            -0.1903752055179727,
            0.26,
        ]
    ),
    a_lower=(
        np.array([0.26]),
        np.array([0.13, 0.8403332099679081]),
        np.array([0.22371961478320504, 0.476755323197997, -0.06470895363112615]),
        np.array(
            [
                0.16648564323248322,
                0.1045001884159172,
                0.03631482272098715,
                -0.13090704451073998,
            ]
        ),
        np.array(
            [
                0.13855640231268224,
                0.0,
                -0.04245337201752043,
                0.02446657898003141,
                0.6194303907248068,
            ]
        ),
        np.array(
            [
                0.13659751177640292,
                0.0,
                -0.05496908796538376,
                -0.04118626728321046,
                0.629933048990164,
                0.06962479448202728,
            ]
        ),
    ),
    a_diagonal=np.array([0.0] + [_GAMMA] * 6),
)


class Kvaerno5(AbstractESDIRK):
    """Kværnø's 5(4) method: an ESDIRK method of order 5 with an embedded
    order-4 error estimate, 7 stages (the first explicit, 6 implicit with the
    same diagonal entry gamma = 0.2600), L-stable and stiffly accurate, for
    stiff problems. Cubic Hermite dense output.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -1000.0 * (y - jnp.cos(t)))
    sol = jd.diffeqsolve(term, jd.Kvaerno5(), 0.0, 1.0, 0.01, jnp.array(0.0),
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
        return 5
