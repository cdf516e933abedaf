"""Kennedy and Carpenter's 3(2) implicit–explicit method (ARK3(2)4L[2]SA)."""

from typing import ClassVar

import numpy as np

from .._interpolation import AbstractStagePolynomialInterpolation
from .._term import AbstractTerm
from .butcher import ButcherTableau, MultiButcherTableau
from .dirk import AbstractESDIRK

# Coefficients: C. A. Kennedy and M. H. Carpenter, "Additive Runge–Kutta schemes
# for convection–diffusion–reaction equations", Applied Numerical Mathematics
# 44 (2003), 139–181: ARK3(2)4L[2]SA, an explicit tableau and an ESDIRK one (stiffly
# accurate, L-stable) with the same nodes and weights. The initial guesses of
# the stage equations (`a_predictor`) are Diffrax's.
_GAMMA = 0.435866521508459
# Both tableaux have these nodes and weights.
_C = np.array([0.871733043016918, 0.6, 1.0])
_B_SOL = np.array(
    [0.18764102434672383, -0.595297473576955, 0.9717899277217721, 0.435866521508459]
)
_B_ERROR = np.array(
    [
        -0.02709926187666531,
        -0.11013520969201585,
        0.10306492520138455,
        0.03416954636729658,
    ]
)
_explicit = ButcherTableau(
    c=_C,
    b_sol=_B_SOL,
    b_error=_B_ERROR,
    a_lower=(
        np.array([0.871733043016918]),
        np.array([0.5275890119763004, 0.0724109880236996]),
        np.array([0.3990960076760701, -0.4375576546135194, 1.0384616469374492]),
    ),
)
_implicit = ButcherTableau(
    c=_C,
    b_sol=_B_SOL,
    b_error=_B_ERROR,
    a_lower=(
        np.array([0.435866521508459]),
        np.array([0.2576482460664272, -0.09351476757488625]),
        np.array([0.18764102434672383, -0.595297473576955, 0.9717899277217721]),
    ),
    a_diagonal=np.array([0.0] + [_GAMMA] * 3),
    a_predictor=(
        np.array([1.0]),
        np.array([0.31171589191628757, 0.6882841080837124]),
        np.array([-0.1471401801395209, 1.147140180139521, 0.0]),
    ),
)

# The dense output (Kennedy and Carpenter 2003, the same paper): each stage's
# weight is a polynomial in the step fraction `s`, `b_i(s) = sum_j B[i, j] s^(j+1)`
# (columns s, s^2), for the explicit and implicit increments alike; of order 2.
_DENSE = np.array(
    [
        [4655552711362 / 22874653954995, -215264564351 / 13552729205753],
        [-18682724506714 / 9892148508045, 17870216137069 / 13817060693119],
        [34259539580243 / 13192909600954, -28141676662227 / 17317692491321],
        [584795268549 / 6622622206610, 2508943948391 / 7218656332882],
    ]
)


class _KenCarp3Interpolation(AbstractStagePolynomialInterpolation):
    coefficients: ClassVar[np.ndarray] = _DENSE


class KenCarp3(AbstractESDIRK):
    """Kennedy and Carpenter's 3(2) implicit–explicit (IMEX) method:
    as `KenCarp4` (same use, arguments and dense output), of order 3 with an
    embedded order-2 error estimate, 4 stages, gamma = 0.4359; for looser
    tolerances. Call it with `terms=MultiTerm(explicit_term, implicit_term)`.

    Reference: C. A. Kennedy and M. H. Carpenter, Applied Numerical Mathematics
    44 (2003), 139–181.
    """

    tableau: ClassVar = MultiButcherTableau(_explicit, _implicit)
    interpolation_cls: ClassVar = _KenCarp3Interpolation

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 3
