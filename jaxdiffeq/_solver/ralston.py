"""Ralston's method."""

from typing import ClassVar

import numpy as np

from .._interpolation import ThirdOrderHermitePolynomialInterpolation
from .._term import AbstractTerm
from .butcher import ButcherTableau
from .runge_kutta import AbstractRungeKutta

# Coefficients: the standard two-stage tableau; the error estimate compares with
# the embedded explicit Euler step (first order).
_tableau = ButcherTableau(
    c=np.array([2 / 3]),
    a_lower=(np.array([2 / 3]),),
    b_sol=np.array([0.25, 0.75]),
    b_error=np.array([0.75, -0.75]),
)


class Ralston(AbstractRungeKutta):
    """Ralston's method: the two-stage second-order method with the smallest
    truncation-error bound (Ralston, 1962).

    Second order, two stages, not FSAL; embedded first-order (Euler) error estimate,
    so it works with adaptive step sizes. Dense output: the quadratic through both
    ends with the first stage as initial slope. Non-stiff problems only.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Ralston(), 0.0, 1.0, 0.05, jnp.array(1.0))
    ```

    Use it for cheap, low-accuracy solves; for tolerances below about 1e-4 a
    higher-order method (`Tsit5`) is far cheaper.
    """

    tableau: ClassVar[ButcherTableau] = _tableau
    interpolation_cls: ClassVar = (
        ThirdOrderHermitePolynomialInterpolation.from_first_stage
    )

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 2
