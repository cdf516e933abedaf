"""Kennedy and Carpenter's 3(2) implicit–explicit method (ARK3(2)4L[2]SA)."""

from typing import ClassVar

import numpy as np

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


class KenCarp3(AbstractESDIRK):
    """Kennedy and Carpenter's 3(2) implicit–explicit (IMEX) method:
    as `KenCarp4` (same use, arguments and dense output), of order 3 with an
    embedded order-2 error estimate, 4 stages, gamma = 0.4359; for looser
    tolerances. Call it with `terms=MultiTerm(explicit_term, implicit_term)`.

    Reference: C. A. Kennedy and M. H. Carpenter, Applied Numerical Mathematics
    44 (2003), 139–181.
    """

    tableau: ClassVar = MultiButcherTableau(_explicit, _implicit)

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 3
