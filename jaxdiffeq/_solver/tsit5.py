"""Tsitouras' 5(4) method and its quartic continuous extension."""

from typing import ClassVar

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PyTree

from .._custom_types import RealScalarLike, Y
from .._interpolation import AbstractLocalInterpolation, _fraction, _increment
from .runge_kutta import AbstractRungeKutta, ButcherTableau

# Coefficients: Tsitouras (2011), Table 1, written with more digits than float64
# holds; they round to the same doubles as Diffrax's `Tsit5`, so step sequences
# match. The last row of `a` repeats `b_sol`: first same as last.
_b_sol = np.array(
    [
        0.09646076681806522951816731316512876333711995238157997181903319145764851595,
        0.01,
        0.4798896504144995747752495322905965199130404621990332488332634944254542060,
        1.379008574103741893192274821856872770756462643091360525934940067397245698,
        -3.290069515436080679901047585711363850115683290894936158531296799594813811,
        2.324710524099773982415355918398765796109060233222962411944060046314465391,
        0.0,
    ]
)
_b_embedded = np.array(
    [
        0.09468075576583945807478876255758922856117527357724631226139574065785592789,
        0.009183565540343253096776363936645313759813746240984095238905939532922955247,
        0.4877705284247615707855642599631228241516691959761363774365216240304071651,
        1.234297566930478985655109673884237654035539930748192848315425833500484878,
        -2.707712349983525454881109975059321670689605166938197378763992255714444407,
        1.866628418170587035753719399566211498666255505244122593996591602841258328,
        1 / 66,
    ]
)
_tableau = ButcherTableau(
    c=np.array(
        [
            0.161,
            0.327,
            0.9,
            0.9800255409045096857298102862870245954942137979563024768854764293221195950,
            1.0,
            1.0,
        ]
    ),
    a_lower=(
        np.array([0.161]),
        np.array(
            [
                -0.008480655492356988544426874250230774675121177393430391537369234245294192976,
                0.3354806554923569885444268742502307746751211773934303915373692342452941929,
            ]
        ),
        np.array(
            [
                2.897153057105493432130432594192938764924887287701866490314866693455023795,
                -6.359448489975074843148159912383825625952700647415626703305928850207288721,
                4.362295432869581411017727318190886861027813359713760212991062156752264926,
            ]
        ),
        np.array(
            [
                5.325864828439256604428877920840511317836476253097040101202360397727981648,
                -11.74888356406282787774717033978577296188744178259862899288666928009020615,
                7.495539342889836208304604784564358155658679161518186721010132816213648793,
                -0.09249506636175524925650207933207191611349983406029535244034750452930469056,
            ]
        ),
        np.array(
            [
                5.861455442946420028659251486982647890394337666164814434818157239052507339,
                -12.92096931784710929170611868178335939541780751955743459166312250439928519,
                8.159367898576158643180400794539253485181918321135053305748355423955009222,
                -0.07158497328140099722453054252582973869127213147363544882721139659546372402,
                -0.02826905039406838290900305721271224146717633626879770007617876201276764571,
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
# d b_i / ds = sum_j _dense_ds[i, j] s^j.
_dense_ds = _dense * np.arange(1, _dense.shape[1] + 1)


def _stage_weights(coefficients: np.ndarray, s, lowest_power: int):
    """The `(stages,)` vector `sum_j coefficients[:, j] s^(lowest_power + j)`."""
    powers = jnp.stack([s ** (lowest_power + j) for j in range(coefficients.shape[1])])
    return jnp.asarray(coefficients, dtype=powers.dtype) @ powers


class _Tsit5Interpolation(AbstractLocalInterpolation):
    """Tsitouras' quartic continuous extension over one `Tsit5` step (fourth order)."""

    t0: RealScalarLike
    t1: RealScalarLike
    y0: Y
    k: PyTree[Array]  # the 7 stage increments, stacked on a leading axis

    def __init__(self, *, t0, t1, y0, y1, k):
        del y1  # the extension reproduces it at s = 1
        self.t0 = t0
        self.t1 = t1
        self.y0 = y0
        self.k = k

    def evaluate(self, t0, t1=None, left=True):
        if t1 is not None:
            return _increment(self, t0, t1, left)
        w = _stage_weights(_dense, _fraction(t0, self.t0, self.t1), 1)
        return jtu.tree_map(
            lambda y, k: (y + jnp.tensordot(w.astype(k.dtype), k, 1)).astype(y.dtype),
            self.y0,
            self.k,
        )

    def derivative(self, t, left=True):
        del left
        dt = self.t1 - self.t0
        # A zero-length step has zero increments; keep the derivative finite there.
        safe_dt = jnp.where(dt == 0, 1, dt)
        w = _stage_weights(_dense_ds, _fraction(t, self.t0, self.t1), 0) / safe_dt
        return jtu.tree_map(lambda k: jnp.tensordot(w.astype(k.dtype), k, 1), self.k)


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

    def order(self, terms):
        del terms
        return 5
