"""The explicit midpoint method."""

from typing import ClassVar

import numpy as np

from .._interpolation import ThirdOrderHermitePolynomialInterpolation
from .._term import AbstractTerm
from .butcher import ButcherTableau
from .runge_kutta import AbstractRungeKutta

# Coefficients: the standard two-stage tableau; the error estimate compares with
# the embedded explicit Euler step (first order).
_tableau = ButcherTableau(
    c=np.array([0.5]),
    a_lower=(np.array([0.5]),),
    b_sol=np.array([0.0, 1.0]),
    b_error=np.array([1.0, -1.0]),
)


class Midpoint(AbstractRungeKutta):
    """The explicit midpoint method: a full step with the slope at the midpoint.

    Second order, two stages, not FSAL; embedded first-order (Euler) error estimate,
    so it works with adaptive step sizes. Dense output: the quadratic through both
    ends with the first stage as initial slope. Non-stiff problems only.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Midpoint(), 0.0, 1.0, 0.05, jnp.array(1.0))
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
