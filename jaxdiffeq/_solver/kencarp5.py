"""Kennedy and Carpenter's 5(4) implicit–explicit method (ARK5(4)8L[2]SA)."""

from typing import ClassVar

import numpy as np

from .._interpolation import AbstractStagePolynomialInterpolation
from .._term import AbstractTerm
from .butcher import ButcherTableau, MultiButcherTableau
from .dirk import AbstractESDIRK

# Coefficients: C. A. Kennedy and M. H. Carpenter, "Additive Runge–Kutta schemes
# for convection–diffusion–reaction equations", Applied Numerical Mathematics
# 44 (2003), 139–181: ARK5(4)8L[2]SA, an explicit tableau and an ESDIRK one (stiffly
# accurate, L-stable) with the same nodes and weights. The initial guesses of
# the stage equations (`a_predictor`) are Diffrax's.
_GAMMA = 0.205
# Both tableaux have these nodes and weights.
_C = np.array([0.41, 0.25992958444838016, 0.19815048669250362, 0.92, 0.24, 0.6, 1.0])
_B_SOL = np.array(
    [
        -0.09554858675139874,
        0.0,
        0.0,
        2.3386928037652464,
        -0.14043175608247527,
        -2.070587707956559,
        0.7628752470251866,
        0.205,
    ]
)
_B_ERROR = np.array(
    [
        0.004028378053609991,
        0.0,
        0.0,
        -0.0684700762345285,
        0.019716427003038328,
        0.07364888848796758,
        -0.016690375399811663,
        -0.01223324191027586,
    ]
)
_explicit = ButcherTableau(
    c=_C,
    b_sol=_B_SOL,
    b_error=_B_ERROR,
    a_lower=(
        np.array([0.41]),
        np.array([0.17753520777580992, 0.08239437667257023]),
        np.array([0.12262307902976895, 0.0, 0.07552740766273468]),
        np.array([2.2901776494938124, 0.0, 11.244925765143737, -12.615103414637549]),
        np.array(
            [
                0.4029445178347679,
                0.0,
                1.3540123800181454,
                -1.4857008988406062,
                -0.031255999012307065,
            ]
        ),
        np.array(
            [
                1.4641384430844078,
                0.0,
                7.230468679858015,
                -7.844607122942423,
                -0.125,
                -0.125,
            ]
        ),
        np.array(
            [
                -1.6748080049977643,
                0.0,
                -6.389438645559299,
                14.692200676518024,
                0.0946662343256827,
                -7.21115732765286,
                1.4885370673662177,
            ]
        ),
    ),
)
_implicit = ButcherTableau(
    c=_C,
    b_sol=_B_SOL,
    b_error=_B_ERROR,
    a_lower=(
        np.array([0.205]),
        np.array([0.1025, -0.047570415551619845]),
        np.array([0.07389944079200692, 0.0, -0.08074895409950329]),
        np.array([0.299218118308015, 0.0, 2.4638206661140414, -2.0480387844220567]),
        np.array(
            [
                0.14689238442881303,
                0.0,
                0.11740332879881549,
                -0.221701968002454,
                -0.007593745225174481,
            ]
        ),
        np.array(
            [
                0.17845729560319554,
                0.0,
                1.0197467452199207,
                -0.22154535039396367,
                -0.03612491620526532,
                -0.5455337742259782,
            ]
        ),
        np.array(
            [
                -0.09554858675139874,
                0.0,
                0.0,
                2.3386928037652464,
                -0.14043175608247527,
                -2.070587707956559,
                0.7628752470251866,
            ]
        ),
    ),
    a_diagonal=np.array([0.0] + [_GAMMA] * 7),
    a_predictor=(
        np.array([1.0]),
        np.array([0.3660254037844386, 0.6339745962155614]),
        np.array([0.5167061300182838, 0.4832938699817162, 0.0]),
        np.array([-1.2439024390243905, 2.2439024390243905, 0.0, 0.0]),
        np.array([0.07667301315729225, 0.0, 0.9233269868427078, 0.0, 0.0]),
        np.array([0.34782608695652184, 0.0, 0.0, 0.0, 0.6521739130434782, 0.0]),
        np.array([-0.08695652173913038, 0.0, 0.0, 0.0, 1.0869565217391304, 0.0, 0.0]),
    ),
)

# The dense output (Kennedy and Carpenter 2003, the same paper): each stage's
# weight is a polynomial in the step fraction `s`, `b_i(s) = sum_j B[i, j] s^(j+1)`
# (columns s, s^2, s^3), for the explicit and implicit increments alike; of
# order 3.
_DENSE = np.array(
    [
        [
            -17674230611817 / 10670229744614,
            43486358583215 / 12773830924787,
            -9257016797708 / 5021505065439,
        ],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [
            65168852399939 / 7868540260826,
            -91478233927265 / 11067650958493,
            26096422576131 / 11239449250142,
        ],
        [
            15494834004392 / 5936557850923,
            -79368583304911 / 10890268929626,
            92396832856987 / 20362823103730,
        ],
        [
            -99329723586156 / 26959484932159,
            -12239297817655 / 9152339842473,
            30029262896817 / 10175596800299,
        ],
        [
            -19024464361622 / 5461577185407,
            115839755401235 / 10719374521269,
            -26136350496073 / 3983972220547,
        ],
        [
            -6511271360970 / 6095937251113,
            5843115559534 / 2180450260947,
            -5289405421727 / 3760307252460,
        ],
    ]
)


class _KenCarp5Interpolation(AbstractStagePolynomialInterpolation):
    coefficients: ClassVar[np.ndarray] = _DENSE


class KenCarp5(AbstractESDIRK):
    """Kennedy and Carpenter's 5(4) implicit–explicit (IMEX) method:
    as `KenCarp4` (same use, arguments and dense output), of order 5 with an
    embedded order-4 error estimate, 8 stages, gamma = 0.205; for tighter
    tolerances. Call it with `terms=MultiTerm(explicit_term, implicit_term)`.

    Reference: C. A. Kennedy and M. H. Carpenter, Applied Numerical Mathematics
    44 (2003), 139–181.
    """

    tableau: ClassVar = MultiButcherTableau(_explicit, _implicit)
    interpolation_cls: ClassVar = _KenCarp5Interpolation

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 5
