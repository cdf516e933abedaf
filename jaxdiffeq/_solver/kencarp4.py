"""Kennedy and Carpenter's 4(3) implicit–explicit method (ARK4(3)6L[2]SA)."""

from typing import ClassVar

import numpy as np

from .._interpolation import AbstractStagePolynomialInterpolation
from .._term import AbstractTerm
from .butcher import ButcherTableau, MultiButcherTableau
from .dirk import AbstractESDIRK

# Coefficients: C. A. Kennedy and M. H. Carpenter, "Additive Runge–Kutta schemes
# for convection–diffusion–reaction equations", Applied Numerical Mathematics
# 44 (2003), 139–181: ARK4(3)6L[2]SA, an explicit tableau and an ESDIRK one (stiffly
# accurate, L-stable) with the same nodes and weights. The initial guesses of
# the stage equations (`a_predictor`) are Diffrax's.
_GAMMA = 0.25
# Both tableaux have these nodes and weights.
_C = np.array([0.5, 0.332, 0.62, 0.85, 1.0])
_B_SOL = np.array(
    [
        0.15791629516167136,
        0.0,
        0.18675894052400077,
        0.6805652953093346,
        -0.27524053099500667,
        0.25,
    ]
)
_B_ERROR = np.array(
    [
        0.0032044943984591845,
        0.0,
        -0.002446251136679456,
        -0.021480075919587227,
        0.04394686806857245,
        -0.02322503541076487,
    ]
)
_explicit = ButcherTableau(
    c=_C,
    b_sol=_B_SOL,
    b_error=_B_ERROR,
    a_lower=(
        np.array([0.5]),
        np.array([0.221776, 0.110224]),
        np.array([-0.04884659515311858, -0.177720652326401, 0.8465672474795196]),
        np.array(
            [
                -0.15541685842491548,
                -0.3567050098221991,
                1.0587258798684427,
                0.30339598837867193,
            ]
        ),
        np.array(
            [
                0.20142435067267633,
                0.008742057842904185,
                0.15993995707168115,
                0.4038290605220775,
                0.22606457389066084,
            ]
        ),
    ),
)
_implicit = ButcherTableau(
    c=_C,
    b_sol=_B_SOL,
    b_error=_B_ERROR,
    a_lower=(
        np.array([0.25]),
        np.array([0.137776, -0.055776]),
        np.array([0.14463686602698217, -0.22393190761334475, 0.4492950415863626]),
        np.array(
            [
                0.09825878328356477,
                -0.5915442428196704,
                0.8101210538282996,
                0.283164405707806,
            ]
        ),
        np.array(
            [
                0.15791629516167136,
                0.0,
                0.18675894052400077,
                0.6805652953093346,
                -0.27524053099500667,
            ]
        ),
    ),
    a_diagonal=np.array([0.0] + [_GAMMA] * 5),
    a_predictor=(
        np.array([1.0]),
        np.array([0.33599999999999997, 0.664]),
        np.array([-0.24, 1.24, 0.0]),
        np.array([-0.37096774193548376, 0.0, 0.0, 1.3709677419354838]),
        np.array([-0.17647058823529416, 0.0, 0.0, 0.0, 1.1764705882352942]),
    ),
)

# The dense output (Kennedy and Carpenter 2003, the same paper): each stage's
# weight is a polynomial in the step fraction `s`, `b_i(s) = sum_j B[i, j] s^(j+1)`
# (columns s, s^2, s^3), for the explicit and implicit increments alike; of
# order 3.
_DENSE = np.array(
    [
        [
            6943876665148 / 7220017795957,
            -54480133 / 30881146,
            6818779379841 / 7100303317025,
        ],
        [0.0, 0.0, 0.0],
        [
            7640104374378 / 9702883013639,
            -11436875 / 14766696,
            2173542590792 / 12501825683035,
        ],
        [
            -20649996744609 / 7521556579894,
            174696575 / 18121608,
            -31592104683404 / 5083833661969,
        ],
        [
            8854892464581 / 2390941311638,
            -12120380 / 966161,
            61146701046299 / 7138195549469,
        ],
        [
            -11397109935349 / 6675773540249,
            3843 / 706,
            -17219254887155 / 4939391667607,
        ],
    ]
)


class _KenCarp4Interpolation(AbstractStagePolynomialInterpolation):
    coefficients: ClassVar[np.ndarray] = _DENSE


class KenCarp4(AbstractESDIRK):
    """Kennedy and Carpenter's 4(3) implicit–explicit (IMEX) method: order 4
    with an embedded order-3 error estimate, 6 stages, explicit for the
    first term and ESDIRK (L-stable, stiffly accurate, gamma = 0.25) for the
    second. For problems with a stiff part and a non-stiff one (say diffusion
    and reaction, or fast and slow waves): only the stiff part is solved
    implicitly, so its Jacobian is smaller or simpler, and the non-stiff part
    costs one evaluation per stage.

    Call it with `terms=MultiTerm(explicit_term, implicit_term)`; a single term
    is refused.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    slow = jd.ODETerm(lambda t, y, args: jnp.sin(t) * jnp.ones_like(y))
    stiff = jd.ODETerm(lambda t, y, args: -1000.0 * y)
    sol = jd.diffeqsolve(jd.MultiTerm(slow, stiff), jd.KenCarp4(), 0.0, 1.0, 0.01,
                         jnp.array([1.0]),
                         stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8))
    ```

    **Arguments:** `root_finder` and `root_find_max_steps` (see `AbstractDIRK`);
    `scan_kind` as for `AbstractRungeKutta`. Dense output: Kennedy and
    Carpenter's polynomial in the stages (order 3; `KenCarp3`'s order 2), as in
    Diffrax; it costs no evaluations.

    Reference: C. A. Kennedy and M. H. Carpenter, Applied Numerical Mathematics
    44 (2003), 139–181.
    """

    tableau: ClassVar = MultiButcherTableau(_explicit, _implicit)
    interpolation_cls: ClassVar = _KenCarp4Interpolation

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 4
