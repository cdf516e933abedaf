"""Hairer and Wanner's RODAS, the Rosenbrock–Wanner method of order 4."""

from typing import ClassVar

import numpy as np

from .._term import AbstractTerm
from .butcher import lower_triangular
from .rosenbrock import AbstractRosenbrock, RosenbrockTableau

# Coefficients: E. Hairer and G. Wanner, Solving Ordinary Differential Equations
# II (2nd ed., Springer 1996), §VI.4, the method of their code RODAS, in their
# W-form (transformed `a` and `C`). Stages 5 and 6 are evaluated at t1 and each
# adds its increment to the last (stiffly accurate): y1 = U_6 + k_6, and k_6 is
# the error estimate (embedded order 3).
_A5 = [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.687886036105895]
_tableau = RosenbrockTableau(
    gamma=0.25,
    a=lower_triangular(
        [
            [],
            [1.544],
            [0.9466785280815826, 0.2557011698983284],
            [3.314825187068521, 2.896124015972201, 0.9986419139977817],
            _A5,
            [*_A5, 1.0],
        ]
    ),
    C=lower_triangular(
        [
            [],
            [-5.6688],
            [-2.430093356833875, -0.2063599157091915],
            [-0.1073529058151375, -9.594562251023355, -20.47028614809616],
            [
                7.496443313967647,
                -10.24680431464352,
                -33.99990352819905,
                11.7089089320616,
            ],
            [
                8.083246795921522,
                -7.981132988064893,
                -31.52159432874371,
                16.31930543123136,
                -6.058818238834054,
            ],
        ]
    ),
    c=np.array([0.0, 0.386, 0.21, 0.63, 1.0, 1.0]),
    d=np.array([0.25, -0.1043, 0.1035, -0.0362, 0.0, 0.0]),
    b_sol=np.array([*_A5, 1.0, 1.0]),
    b_error=np.array([0.0] * 5 + [1.0]),
    # The two rows that give the coefficients of the order-3 dense output.
    dense=np.array(
        [
            [
                10.12623508344586,
                -7.487995877610167,
                -34.80091861555747,
                -7.992771707568823,
                1.025137723295662,
                0.0,
            ],
            [
                -0.6762803392801253,
                6.087714651680015,
                16.43084320892478,
                24.76722511418386,
                -6.594389125716872,
                0.0,
            ],
        ]
    ),
)


class Rodas4(AbstractRosenbrock):
    """Hairer and Wanner's RODAS: a Rosenbrock–Wanner method of order 4 with
    an embedded order-3 error estimate, 6 stages, L-stable and stiffly
    accurate, with an order-3 dense output. As `Rodas5P` (same use and
    arguments), one order lower and two stages cheaper: for loose tolerances.
    Not in Diffrax.

    Reference: E. Hairer and G. Wanner, Solving Ordinary Differential Equations
    II, 2nd ed., Springer (1996), §VI.4.
    """

    tableau: ClassVar[RosenbrockTableau] = _tableau

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 4
