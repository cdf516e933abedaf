"""Kværnø's 3(2) ESDIRK method."""

from typing import ClassVar

import numpy as np

from .._term import AbstractTerm
from .butcher import ButcherTableau
from .dirk import AbstractESDIRK

# Coefficients: A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with
# an explicit first stage", BIT Numerical Mathematics 44 (2004), 489–502: the
# 3(2) method with gamma = 0.4358665215. Stiffly accurate: the last row of
# `a` is `b_sol`, so the last stage is evaluated at (t1, y1).
_GAMMA = 0.4358665215
_tableau = ButcherTableau(
    c=np.array([0.871733043, 1.0, 1.0]),
    b_sol=np.array(
        [0.30880996997303606, 1.490563388254108, -1.2352398797271447, 0.4358665215]
    ),
    b_error=np.array(
        [-0.18175341844607212, 1.416993298173216, -1.6711064012271446, 0.4358665215]
    ),
    a_lower=(
        np.array([0.4358665215]),
        np.array([0.4905633884191082, 0.0735700900808919]),
        np.array([0.30880996997303606, 1.490563388254108, -1.2352398797271447]),
    ),
    a_diagonal=np.array([0.0] + [_GAMMA] * 3),
)


class Kvaerno3(AbstractESDIRK):
    """Kværnø's 3(2) method: an ESDIRK method of order 3 with an embedded
    order-2 error estimate, 4 stages (the first explicit, 3 implicit with the
    same diagonal entry gamma = 0.4359), L-stable and stiffly accurate, for
    stiff problems. Cubic Hermite dense output.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -1000.0 * (y - jnp.cos(t)))
    sol = jd.diffeqsolve(term, jd.Kvaerno3(), 0.0, 1.0, 0.01, jnp.array(0.0),
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
        return 3
