"""The Dormand–Prince 5(4) method and Shampine's quartic dense output."""

from typing import ClassVar

import numpy as np

from .._interpolation import QUARTIC_CONDITIONS, AbstractStagePolynomialInterpolation
from .._term import AbstractTerm
from .butcher import ButcherTableau
from .runge_kutta import AbstractRungeKutta

# Coefficients: Dormand & Prince (1980), the pair RK5(4)7M. The last row of `a`
# repeats `b_sol`: first same as last. The embedded fourth-order weights are not
# Dormand & Prince's own (5179/57600, ..., 1/40, used by ode45 and Hairer's DOPRI5)
# but Shampine's (1986) alternative, which Diffrax uses: we keep Diffrax's choice so
# that adaptive step sequences match it.
_b_sol = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
_b_embedded = np.array(
    [1951 / 21600, 0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60]
)
_tableau = ButcherTableau(
    c=np.array([1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0]),
    a_lower=(
        np.array([1 / 5]),
        np.array([3 / 40, 9 / 40]),
        np.array([44 / 45, -56 / 15, 32 / 9]),
        np.array([19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729]),
        np.array([9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]),
        _b_sol[:-1],
    ),
    b_sol=_b_sol,
    b_error=_b_sol - _b_embedded,
)

# Dense output: the quartic in s = (t - t0)/h that matches y0 and y1, the slopes k_1
# (at s = 0) and k_7 (at s = 1, exact because of FSAL), and Shampine's (1986)
# fifth-order value at the midpoint, y(t0 + h/2) ≈ y0 + sum_i _midpoint[i] k_i.
# Writing y(t0 + s h) = y0 + sum_i b_i(s) k_i with b_i(s) = sum_j _dense[i, j]
# s^(j + 1), the four conditions are a 4x4 linear system for the coefficients of
# each b_i; solved once here. (It is the interpolant of Hairer's DOPRI5 code.)
_midpoint = (
    np.array(
        [
            6025192743 / 30085553152,
            0,
            51252292925 / 65400821598,
            -2691868925 / 45128329728,
            187940372067 / 1594534317056,
            -1776094331 / 19743644256,
            11237099 / 235043384,
        ]
    )
    / 2
)
_targets = np.stack([np.eye(7)[0], _midpoint, _b_sol, np.eye(7)[-1]])
_dense = np.linalg.solve(QUARTIC_CONDITIONS, _targets).T  # (stages, 4)


class _Dopri5Interpolation(AbstractStagePolynomialInterpolation):
    """Shampine's quartic dense output over one `Dopri5` step (fourth order)."""

    coefficients: ClassVar[np.ndarray] = _dense


class Dopri5(AbstractRungeKutta):
    """The Dormand–Prince 5(4) explicit Runge–Kutta method.

    Fifth order, with an embedded fourth-order error estimate (local extrapolation:
    the step is advanced with the fifth-order solution; the embedded weights are
    Shampine's, as in Diffrax, so the error estimate differs slightly from
    `ode45`'s). Seven stages with
    first-same-as-last, so six new vector-field evaluations per accepted step.
    Dense output is Shampine's fourth-order quartic, which needs no extra
    evaluations. For non-stiff problems.

    **Arguments:** none.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Dopri5(), 0.0, 1.0, 0.1, jnp.array(1.0),
                         stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8))
    ```

    References: J. R. Dormand and P. J. Prince, "A family of embedded Runge–Kutta
    formulae", J. Comput. Appl. Math. 6 (1980) 19–26; dense output from
    L. F. Shampine, "Some practical Runge–Kutta formulas", Math. Comp. 46 (1986)
    135–150.

    `Tsit5` has the same cost per step and usually a smaller error constant, so
    prefer it unless matching Diffrax's `Dopri5` or comparing with DOPRI5 results. Not for stiff problems,
    and at tolerances tighter than about 1e-8 prefer `Dopri8`.
    """

    tableau: ClassVar[ButcherTableau] = _tableau
    interpolation_cls: ClassVar = _Dopri5Interpolation

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 5
