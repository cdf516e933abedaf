"""Tsitouras' 5(4) method and its quartic continuous extension."""

from typing import ClassVar

import numpy as np

from .._interpolation import AbstractStagePolynomialInterpolation
from .._term import AbstractTerm
from .butcher import ButcherTableau
from .runge_kutta import AbstractRungeKutta

# Coefficients: Tsitouras (2011), Table 1, written with more digits than float64
# holds; they round to the same doubles as Diffrax's `Tsit5`, so step sequences
# match. The last row of `a` repeats `b_sol`: first same as last.
_b_sol = np.array(
    [
        0.09646076681806522951816731,
        0.01,
        0.4798896504144995747752495,
        1.379008574103741893192274,
        -3.290069515436080679901047,
        2.324710524099773982415355,
        0.0,
    ]
)
_b_embedded = np.array(
    [
        0.09468075576583945807478876,
        0.009183565540343253096776363,
        0.4877705284247615707855642,
        1.234297566930478985655109,
        -2.707712349983525454881109,
        1.866628418170587035753719,
        1 / 66,
    ]
)
_tableau = ButcherTableau(
    c=np.array(
        [
            0.161,
            0.327,
            0.9,
            0.9800255409045096857298102,
            1.0,
            1.0,
        ]
    ),
    a_lower=(
        np.array([0.161]),
        np.array(
            [
                -0.008480655492356988544426874,
                0.3354806554923569885444268,
            ]
        ),
        np.array(
            [
                2.897153057105493432130432,
                -6.359448489975074843148159,
                4.362295432869581411017727,
            ]
        ),
        np.array(
            [
                5.325864828439256604428877,
                -11.74888356406282787774717,
                7.495539342889836208304604,
                -0.09249506636175524925650207,
            ]
        ),
        np.array(
            [
                5.861455442946420028659251,
                -12.92096931784710929170611,
                8.159367898576158643180400,
                -0.07158497328140099722453054,
                -0.02826905039406838290900305,
            ]
        ),
        _b_sol[:-1],
    ),
    b_sol=_b_sol,
    b_error=_b_sol - _b_embedded,
)

# The continuous extension y(t0 + s h) = y0 + sum_i b_i(s) k_i, with
# b_i(s) = sum_j _dense[i, j] s^(j + 1): Tsitouras (2011), Section 3, multiplied out
# into powers of s so that evaluation is one small matrix-vector product.
_dense = np.array(
    [
        [1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
        [0.0, 0.1317, -0.2234, 0.1017],
        [0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253],
        [0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902],
        [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
        [0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661],
        [0.0, 1.5, -4.0, 2.5],
    ]
)


class _Tsit5Interpolation(AbstractStagePolynomialInterpolation):
    """Tsitouras' quartic continuous extension over one `Tsit5` step (fourth order)."""

    coefficients: ClassVar[np.ndarray] = _dense


class Tsit5(AbstractRungeKutta):
    """Tsitouras' 5(4) explicit Runge–Kutta method.

    Fifth order, with an embedded fourth-order error estimate. Seven stages with
    first-same-as-last, so six new vector-field evaluations per accepted step.
    Dense output is Tsitouras' fourth-order quartic continuous extension, which uses
    the seven stages already computed (no extra evaluations). For non-stiff problems;
    the usual first choice at moderate tolerances (about 1e-3 to 1e-8).

    **Arguments:** none.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 1.0, 0.1, jnp.array(1.0),
                         stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8))
    ```

    Reference: Ch. Tsitouras, "Runge–Kutta pairs of order 5(4) satisfying only the
    first column simplifying assumption", Comput. Math. Appl. 62 (2011) 770–775.

    Not for stiff problems (use an implicit method), and at tolerances tighter than
    about 1e-8 `Dopri8` takes far fewer steps.
    """

    tableau: ClassVar[ButcherTableau] = _tableau
    interpolation_cls: ClassVar = _Tsit5Interpolation

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 5
