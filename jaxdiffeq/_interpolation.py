"""Interpolation: local interpolants over one step, and dense output over a solve."""

import abc
from typing import ClassVar, Self

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PyTree

from ._custom_types import RealScalarLike, Y
from ._misc import scale, where


class AbstractPath(eqx.Module):
    """A function of time on `[t0, t1]` that can be evaluated and differentiated."""

    t0: eqx.AbstractVar[RealScalarLike]
    t1: eqx.AbstractVar[RealScalarLike]

    @abc.abstractmethod
    def evaluate(
        self, t0: RealScalarLike, t1: RealScalarLike | None = None, left: bool = True
    ) -> PyTree[Array]:
        """The value at `t0`; or, if `t1` is given, the increment from `t0` to `t1`.

        `left` chooses the left or right limit at a discontinuity; it matters only
        for paths with jumps.
        """

    def derivative(self, t: RealScalarLike, left: bool = True) -> PyTree[Array]:
        """The time derivative at `t` (by forward-mode autodiff unless overridden)."""
        return jax.jvp(
            lambda s: self.evaluate(s, left=left), (t,), (jnp.ones_like(t),)
        )[1]


class AbstractLocalInterpolation(AbstractPath):
    """The interpolant of a solver over one step `[t0, t1]`.

    A solver's `interpolation_cls(t0=, t1=, **dense_info)` builds it from the
    `dense_info` dictionary that the solver's `step` returns.
    """


class _ValueOnStep(AbstractLocalInterpolation):
    """A local interpolant defined by its value at each time of the step
    (`_at`); `evaluate` takes increments as differences of two values."""

    def evaluate(
        self, t0: RealScalarLike, t1: RealScalarLike | None = None, left: bool = True
    ) -> PyTree[Array]:
        if t1 is not None:
            return _increment(self, t0, t1, left)
        return self._at(t0, left)

    @abc.abstractmethod
    def _at(self, t: RealScalarLike, left: bool) -> PyTree[Array]:
        """The value at `t` (`left`: the limit from the left, for a jump)."""


def _increment(path: AbstractPath, t0, t1, left):
    if t1 is None:
        return path.evaluate(t0, left=left)
    return jtu.tree_map(
        lambda a, b: b - a, path.evaluate(t0, left=left), path.evaluate(t1, left=left)
    )


def _fraction(t, t0, t1):
    # Guard a zero-length step (t0 == t1) so that the fraction is 0 rather than NaN.
    dt = t1 - t0
    safe_dt = where(dt == 0, 1, dt)
    return where(dt == 0, 0, (t - t0) / safe_dt)


class LocalLinearInterpolation(_ValueOnStep):
    """Linear interpolation between the two ends of a step (first order)."""

    t0: RealScalarLike
    t1: RealScalarLike
    y0: Y
    y1: Y

    def _at(self, t: RealScalarLike, left: bool) -> PyTree[Array]:
        del left
        s = _fraction(t, self.t0, self.t1)
        return jtu.tree_map(lambda a, b: a + scale(s, b - a), self.y0, self.y1)

    def derivative(self, t: RealScalarLike, left: bool = True) -> PyTree[Array]:
        del t, left
        dt = jnp.subtract(self.t1, self.t0)
        return jtu.tree_map(
            lambda a, b: (b - a) / jnp.asarray(dt).astype(a.dtype), self.y0, self.y1
        )


class ThirdOrderHermitePolynomialInterpolation(_ValueOnStep):
    """Cubic Hermite interpolation from the values and increments at both ends.

    `k0` and `k1` are the increments `dt * dy/dt` at `t0` and `t1`. With exact end
    derivatives the interpolant is third-order accurate.
    """

    t0: RealScalarLike
    t1: RealScalarLike
    y0: Y
    y1: Y
    k0: Y
    k1: Y

    @classmethod
    def from_k(
        cls, *, t0: RealScalarLike, t1: RealScalarLike, y0: Y, y1: Y, k: PyTree[Array]
    ) -> Self:
        """Build from a Runge–Kutta solver's stages `k` (leading axis = stage), using
        the first stage at `t0` and the last stage as the increment at `t1` (exact
        for first-same-as-last tableaux)."""
        return cls(
            t0=t0,
            t1=t1,
            y0=y0,
            y1=y1,
            k0=jtu.tree_map(lambda x: x[0], k),
            k1=jtu.tree_map(lambda x: x[-1], k),
        )

    @classmethod
    def from_first_stage(
        cls, *, t0: RealScalarLike, t1: RealScalarLike, y0: Y, y1: Y, k: PyTree[Array]
    ) -> Self:
        """Build from a Runge–Kutta solver's stages when no stage sits at `t1`
        (e.g. `Midpoint`, `Ralston`): the end slope is taken from the quadratic
        through `y0` and `y1` with the first stage as slope at `t0`, so the cubic
        reduces to that quadratic (second order in value, first in derivative at
        worst, and free of the error of a stage evaluated elsewhere)."""
        k0 = jtu.tree_map(lambda x: x[0], k)
        k1 = jtu.tree_map(lambda a, b, c: 2 * (b - a) - c, y0, y1, k0)
        return cls(t0=t0, t1=t1, y0=y0, y1=y1, k0=k0, k1=k1)

    def _at(self, t: RealScalarLike, left: bool) -> PyTree[Array]:
        del left
        s = _fraction(t, self.t0, self.t1)

        def leaf(y0, y1, k0, k1):
            # Hermite basis in Horner form: y0 + s*(k0 + s*(c2 + s*c3)).
            dy = y1 - y0
            c2 = 3 * dy - 2 * k0 - k1
            c3 = k0 + k1 - 2 * dy
            s_ = jnp.asarray(s).astype(y0.dtype)
            return y0 + s_ * (k0 + s_ * (c2 + s_ * c3))

        return jtu.tree_map(leaf, self.y0, self.y1, self.k0, self.k1)


# The quartic p(s) = y0 + c1 s + c2 s^2 + c3 s^3 + c4 s^4 in the step fraction s
# through a step's ends and its midpoint: the rows give, from (c1, ..., c4), its
# slope at s = 0, its value at s = 1/2 and at s = 1 (less y0), its slope at s = 1.
# `Dopri5` solves the same conditions for stage weights.
QUARTIC_CONDITIONS = np.array(
    [
        [1, 0, 0, 0],
        [1 / 2, 1 / 4, 1 / 8, 1 / 16],
        [1, 1, 1, 1],
        [1, 2, 3, 4],
    ]
)
_QUARTIC = np.linalg.inv(QUARTIC_CONDITIONS)


class FourthOrderPolynomialInterpolation(_ValueOnStep):
    """The quartic through the step's ends and a midpoint estimate, with the
    increments at both ends as its slopes (Diffrax's class of the same name).

    A subclass sets the class variable `c_mid`, the stage weights of the
    midpoint estimate `y(t_mid) ~ y0 + sum_i c_mid[i] k_i`; the increments at
    `t0` and `t1` are the first and the last stage (`k[0]`, `k[-1]`: a
    first-same-as-last method). With Shampine's midpoint weights for `Dopri5`
    it is of order 4. Built from a solver's `dense_info` (`y0`, `y1`, `k`, the
    stage increments on a leading axis).
    """

    c_mid: eqx.AbstractClassVar[np.ndarray]
    t0: RealScalarLike
    t1: RealScalarLike
    coeffs: PyTree[Array]  # per leaf (5, ...): y0, c1, c2, c3, c4

    def __init__(
        self, *, t0: RealScalarLike, t1: RealScalarLike, y0: Y, y1: Y, k: PyTree[Array]
    ):
        def leaf(y0, y1, k):
            c_mid = jnp.asarray(self.c_mid, k.dtype)
            y_mid = y0 + jnp.tensordot(c_mid, k, 1).astype(y0.dtype)
            k0, k1 = k[0].astype(y0.dtype), k[-1].astype(y0.dtype)
            rhs = (k0, y_mid - y0, y1 - y0, k1)
            c = [
                sum(jnp.asarray(m, y0.dtype) * r for m, r in zip(row, rhs))
                for row in _QUARTIC
            ]
            return jnp.stack([y0, *c])

        self.t0 = t0
        self.t1 = t1
        self.coeffs = jtu.tree_map(leaf, y0, y1, k)

    def _at(self, t: RealScalarLike, left: bool) -> PyTree[Array]:
        del left
        s = _fraction(t, self.t0, self.t1)

        def leaf(c):
            s_ = jnp.asarray(s).astype(c.dtype)
            return c[0] + s_ * (c[1] + s_ * (c[2] + s_ * (c[3] + s_ * c[4])))

        return jtu.tree_map(leaf, self.coeffs)


class AbstractGlobalInterpolation(AbstractPath):
    """A path over a whole interval made of pieces between the times `ts`
    (`DenseInterpolation`, the dense output of a solve). Importable for
    `isinstance` checks, as in Diffrax."""

    ts: eqx.AbstractVar[Array]


class DenseInterpolation(AbstractGlobalInterpolation):
    """Dense output of a whole solve: the local interpolants of every accepted step.

    `ts` holds the step boundaries (padded with `inf` past the last step) and
    `infos` the stacked `dense_info` of each step.
    """

    t0: RealScalarLike
    t1: RealScalarLike
    ts: Array
    ts_size: Array
    infos: PyTree[Array]
    interpolation_cls: type[AbstractLocalInterpolation] = eqx.field(static=True)
    direction: Array

    def _local(self, t, left):
        # Internal time runs forwards (tau = direction * t).
        tau = jnp.asarray(t).astype(self.ts.dtype) * self.direction
        num_intervals = jnp.maximum(self.ts_size - 1, 1)
        side = "left" if left else "right"
        index = jnp.searchsorted(self.ts[1:], tau, side=side)
        index = jnp.clip(index, 0, num_intervals - 1)
        info = jtu.tree_map(lambda x: x[index], self.infos)
        local = self.interpolation_cls(t0=self.ts[index], t1=self.ts[index + 1], **info)
        return local, tau

    def evaluate(
        self, t0: RealScalarLike, t1: RealScalarLike | None = None, left: bool = True
    ) -> PyTree[Array]:
        if t1 is not None:
            return _increment(self, t0, t1, left)
        local, tau = self._local(t0, left)
        return local.evaluate(tau, left=left)

    def derivative(self, t: RealScalarLike, left: bool = True) -> PyTree[Array]:
        local, tau = self._local(t, left)
        return jtu.tree_map(
            lambda d: scale(self.direction, d), local.derivative(tau, left)
        )


class AbstractStagePolynomialInterpolation(_ValueOnStep):
    """The continuous extension of a Runge–Kutta method: a polynomial in the step
    fraction `s = (t - t0) / (t1 - t0)` that combines the stage increments,

    `y(t0 + s h) = y0 + sum_i b_i(s) k_i`,  `b_i(s) = sum_j coefficients[i, j] s^(j+1)`.

    A method supplies the class variable `coefficients` (shape `(stages, degree)`);
    evaluation is one small matrix-vector product for the weights and one
    contraction with the stages per leaf. Built from a solver's `dense_info`
    (`y0`, `y1`, `k`); `y1` is not needed since the polynomial reproduces it.
    """

    coefficients: ClassVar[np.ndarray]
    t0: RealScalarLike
    t1: RealScalarLike
    y0: Y
    k: PyTree[Array]  # stage increments, stacked on a leading axis

    def __init__(
        self, *, t0: RealScalarLike, t1: RealScalarLike, y0: Y, y1: Y, k: PyTree[Array]
    ):
        del y1
        self.t0 = t0
        self.t1 = t1
        self.y0 = y0
        self.k = k

    def _weights(self, t, derivative: bool):
        """The `(stages,)` weights at `t`, by Horner's rule on constant columns.
        Elementwise on purpose: a matrix product here costs noticeably more to
        compile, and this runs inside the step loop."""
        s = _fraction(t, self.t0, self.t1)
        c = np.asarray(self.coefficients)
        if derivative:
            c = c * np.arange(1, c.shape[1] + 1)
        dtype = jnp.result_type(s)
        w = jnp.asarray(c[:, -1], dtype)
        for j in range(c.shape[1] - 2, -1, -1):
            w = w * s + jnp.asarray(c[:, j], dtype)
        return w if derivative else w * s

    def _combine(self, w, k):
        """`sum_i w[i] k[i]` written out over the stages (no `dot`, see above)."""
        w = w.astype(k.dtype)
        total = None
        for i in range(k.shape[0]):
            term = lax.index_in_dim(w, i, keepdims=False) * lax.index_in_dim(
                k, i, keepdims=False
            )
            total = term if total is None else total + term
        return total

    def _at(self, t: RealScalarLike, left: bool) -> PyTree[Array]:
        del left
        w = self._weights(t, derivative=False)
        return jtu.tree_map(
            lambda y, k: (y + self._combine(w, k)).astype(y.dtype), self.y0, self.k
        )

    def derivative(self, t: RealScalarLike, left: bool = True) -> PyTree[Array]:
        del left
        dt = jnp.subtract(self.t1, self.t0)
        # A zero-length step has zero increments; keep the derivative finite there.
        safe_dt = where(dt == 0, 1, dt)
        w = self._weights(t, derivative=True) / safe_dt
        return jtu.tree_map(lambda k: self._combine(w, k), self.k)
