"""Prince and Dormand's 8(7) method with a dense output over its 14 stages."""

from typing import ClassVar

import numpy as np

from .._interpolation import AbstractStagePolynomialInterpolation
from .._term import AbstractTerm
from .butcher import ButcherTableau
from .runge_kutta import AbstractRungeKutta

# Coefficients: Prince & Dormand (1981), RK8(7)13M, in their published rational
# approximations; the same doubles as Diffrax's `Dopri8`, so step sequences match.
# A 14th stage at (t1, y1) is appended: it costs nothing (first same as last) and
# the dense output needs it.
_b_sol = np.array(
    [
        *[14005451 / 335480064, 0, 0, 0, 0, -59238493 / 1068277825],
        *[181606767 / 758867731, 561292985 / 797845732, -1041891430 / 1371343529],
        *[760417239 / 1151165299, 118820643 / 751138087, -528747749 / 2220607170],
        *[1 / 4, 0],
    ]
)
_b_embedded = np.array(
    [
        *[13451932 / 455176623, 0, 0, 0, 0, -808719846 / 976000145],
        *[1757004468 / 5645159321, 656045339 / 265891186, -3867574721 / 1518517206],
        *[465885868 / 322736535, 53011238 / 667516719, 2 / 45, 0, 0],
    ]
)
_tableau = ButcherTableau(
    c=np.array(
        [
            *[1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200],
            *[5490023248 / 9719169821, 13 / 20, 1201146811 / 1299019798, 1, 1, 1],
        ]
    ),
    a_lower=(
        np.array([1 / 18]),
        np.array([1 / 48, 1 / 16]),
        np.array([1 / 32, 0, 3 / 32]),
        np.array([5 / 16, 0, -75 / 64, 75 / 64]),
        np.array([3 / 80, 0, 0, 3 / 16, 3 / 20]),
        np.array(
            [
                *[29443841 / 614563906, 0, 0, 77736538 / 692538347],
                *[-28693883 / 1125000000, 23124283 / 1800000000],
            ]
        ),
        np.array(
            [
                *[16016141 / 946692911, 0, 0, 61564180 / 158732637],
                *[22789713 / 633445777, 545815736 / 2771057229],
                -180193667 / 1043307555,
            ]
        ),
        np.array(
            [
                *[39632708 / 573591083, 0, 0, -433636366 / 683701615],
                *[-421739975 / 2616292301, 100302831 / 723423059],
                *[790204164 / 839813087, 800635310 / 3783071287],
            ]
        ),
        np.array(
            [
                *[246121993 / 1340847787, 0, 0, -37695042795 / 15268766246],
                *[-309121744 / 1061227803, -12992083 / 490766935],
                *[6005943493 / 2108947869, 393006217 / 1396673457],
                123872331 / 1001029789,
            ]
        ),
        np.array(
            [
                *[-1028468189 / 846180014, 0, 0, 8478235783 / 508512852],
                *[1311729495 / 1432422823, -10304129995 / 1701304382],
                *[-48777925059 / 3047939560, 15336726248 / 1032824649],
                *[-45442868181 / 3398467696, 3065993473 / 597172653],
            ]
        ),
        np.array(
            [
                *[185892177 / 718116043, 0, 0, -3185094517 / 667107341],
                *[-477755414 / 1098053517, -703635378 / 230739211],
                *[5731566787 / 1027545527, 5232866602 / 850066563],
                *[-4093664535 / 808688257, 3962137247 / 1805957418],
                65686358 / 487910083,
            ]
        ),
        np.array(
            [
                *[403863854 / 491063109, 0, 0, -5068492393 / 434740067],
                *[-411421997 / 543043805, 652783627 / 914296604],
                *[11173962825 / 925320556, -13158990841 / 6184727034],
                *[3936647629 / 1978049680, -160528059 / 685178525],
                *[248638103 / 1413531060, 0],
            ]
        ),
        _b_sol[:-1],
    ),
    b_sol=_b_sol,
    b_error=_b_sol - _b_embedded,
)

# Dense output: y(t0 + s h) = y0 + sum_i b_i(s) k_i over all 14 stages, with the
# sextic b_i(s) = sum_j _dense[i, j] s^(j + 1); stages 2-5 have zero weight.
# Coefficients as in Diffrax's `Dopri8` (which cites Bogacki & Shampine 1990), kept
# so that dense output matches it. Measured, this interpolant is only fifth-order
# accurate (local error O(h^6)); a seventh-order one (Bogacki & Shampine) would
# need extra stages per step, which we deliberately do not spend.
# fmt: off
_dense = np.array([
    [1.0, -6.6910181737837595697, 19.9990069333683970610, -30.0610568289666450593,
     22.1396504998094068976, -6.3448349392860401388],
    *[[0.0] * 6] * 4,
    [0.0, -7.6142658045872677172, 52.2273532792945524050, -121.4999627731334642623,
     116.4422149550342161651, -39.6107919852202505218],
    [0.0, 10.7281392630428866124, -46.8919164181093621583, 83.1721004639847717481,
     -67.1451318825957197185, 20.3761213808791436958],
    [0.0, 0.5526637063753648783, -0.1890893225010595467, 9.5724507555993664382,
     -16.5672243527496524646, 7.3347098826795362023],
    [0.0, 4.2186562625665153803, -35.7075975946222072821, 87.8406057677205645007,
     -89.9916014847245016028, 32.8801774352459155182],
    [0.0, -0.6627209125361597559, 6.2736448083240352160, -17.4152107770762969005,
     22.6237489648532849093, -10.1588990526426760954],
    [0.0, -1.2636789001135462218, 10.3160881272450748458, -28.5903289514790976966,
     32.2362340167355370113, -12.5401268098782561200],
    [0.0, 5.4106037898590422230, -34.7650769866611817349, 81.6630950584341412934,
     -82.1020315488359848644, 29.5553001484516038033],
    [0.0, -7.0321379067945741781, 47.7457971078225540396, -114.9375291377009418170,
     116.2662185791119533462, -41.7923486424390588923],
    [0.0, 2.3537586759714983486, -19.0082099341608028453, 50.2558364226176017553,
     -53.9020777466385396792, 20.3006925822100825485],
])
# fmt: on


class _Dopri8Interpolation(AbstractStagePolynomialInterpolation):
    """The sextic dense output over one `Dopri8` step, from its 14 stages."""

    coefficients: ClassVar[np.ndarray] = _dense


class Dopri8(AbstractRungeKutta):
    """Prince and Dormand's 8(7) explicit Runge–Kutta method.

    Eighth order, with an embedded seventh-order error estimate. Thirteen stages
    plus a fourteenth at `(t1, y1)` that is reused as the next step's first
    (first-same-as-last), so thirteen new vector-field evaluations per accepted step.
    Dense output is a sextic in the step fraction built from the 14 stages, with no
    extra evaluations; it is only fifth-order accurate. For non-stiff problems at
    tight tolerances.

    **Arguments:** none.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Dopri8(), 0.0, 1.0, 0.1, jnp.array(1.0),
                         stepsize_controller=jd.PIDController(rtol=1e-10, atol=1e-12))
    ```

    References: P. J. Prince and J. R. Dormand, "High order embedded Runge–Kutta
    formulae", J. Comput. Appl. Math. 7 (1981) 67–75; dense output after
    P. Bogacki and L. F. Shampine, "Interpolating high-order Runge–Kutta formulas",
    Comput. Math. Appl. 20 (1990) 15–24.

    Each step costs twice as many evaluations as `Tsit5`'s, which pays off only at
    tolerances tighter than about 1e-8; not for stiff problems. At such tolerances
    the fifth-order dense output is much less accurate than the steps, so values
    from `SaveAt(ts=...)` between step ends carry a larger error than the
    tolerance suggests.
    """

    tableau: ClassVar[ButcherTableau] = _tableau
    interpolation_cls: ClassVar = _Dopri8Interpolation

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 8
