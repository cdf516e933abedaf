"""The Bogacki–Shampine 3(2) method."""

from typing import ClassVar

import numpy as np

from .._interpolation import ThirdOrderHermitePolynomialInterpolation
from .._term import AbstractTerm
from .butcher import ButcherTableau
from .runge_kutta import AbstractRungeKutta

# Coefficients: Bogacki & Shampine (1989). b_error = b_sol - b_embedded, with the
# second-order embedded weights (7/24, 1/4, 1/3, 1/8).
_tableau = ButcherTableau(
    c=np.array([1 / 2, 3 / 4, 1.0]),
    a_lower=(
        np.array([1 / 2]),
        np.array([0.0, 3 / 4]),
        np.array([2 / 9, 1 / 3, 4 / 9]),
    ),
    b_sol=np.array([2 / 9, 1 / 3, 4 / 9, 0.0]),
    b_error=np.array([2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8]),
)


class Bosh3(AbstractRungeKutta):
    """The Bogacki–Shampine 3(2) method (MATLAB's `ode23`).

    Third order, four stages with first-same-as-last (three new vector-field
    evaluations per step), embedded second-order error estimate. Cubic Hermite
    interpolation for dense output, exact at both ends because of FSAL.
    Non-stiff problems.

    This file is also the template for a new explicit method: a validated
    `ButcherTableau`, an interpolant and the order.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Bosh3(), 0.0, 1.0, 0.1, jnp.array(1.0),
                         stepsize_controller=jd.PIDController(rtol=1e-4, atol=1e-6))
    ```

    Reference: P. Bogacki and L. F. Shampine, "A 3(2) pair of Runge–Kutta formulas",
    Appl. Math. Lett. 2 (1989) 321–325. For tolerances tighter than ~1e-5 prefer
    `Tsit5`.
    """

    tableau: ClassVar[ButcherTableau] = _tableau
    interpolation_cls: ClassVar = ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 3
