"""`FourthOrderPolynomialInterpolation`: the quartic through a step's ends and a
midpoint estimate. Its defining conditions, and its order with Shampine's
midpoint weights for `Dopri5` against that method's own dense output."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiffeq as jd
from jaxdiffeq._solver import dopri5


class _Dopri5Quartic(jd.FourthOrderPolynomialInterpolation):
    c_mid = dopri5._midpoint  # Shampine's (1986) midpoint weights


def test_quartic_meets_its_conditions():
    class Mid(jd.FourthOrderPolynomialInterpolation):
        c_mid = np.array([0.2, 0.3, 0.1])

    y0 = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
    y1 = {"a": jnp.array([1.5, -1.0]), "b": jnp.array(2.0)}
    k = {
        "a": jnp.array([[0.4, 1.2], [0.1, 0.0], [0.7, 0.9]]),
        "b": jnp.array([-1.1, 0.3, -0.8]),
    }
    t0, t1 = 2.0, 2.5
    interp = Mid(t0=t0, t1=t1, y0=y0, y1=y1, k=k)
    h = t1 - t0
    mid = jax.tree.map(lambda y, k: y + np.tensordot(Mid.c_mid, k, 1), y0, k)
    checks = [
        (interp.evaluate(t0), y0),
        (interp.evaluate(t1), y1),
        (interp.evaluate(t0 + h / 2), mid),
        (interp.derivative(t0), jax.tree.map(lambda k: k[0] / h, k)),
        (interp.derivative(t1), jax.tree.map(lambda k: k[-1] / h, k)),
        (interp.evaluate(t0, t1), jax.tree.map(lambda a, b: b - a, y0, y1)),
    ]
    for got, want in checks:
        jax.tree.map(
            lambda g, w: np.testing.assert_allclose(g, w, atol=1e-12), got, want
        )


def _rotation_step(dt):
    term, solver = jd.ODETerm(lambda t, y, args: jnp.stack([y[1], -y[0]])), jd.Dopri5()
    y0 = jnp.array([0.0, 1.0])  # y = (sin t, cos t)
    state = solver.init(term, 0.0, dt, y0, None)
    _, _, info, _, _ = solver.step(term, 0.0, dt, y0, None, state, False)
    return info


def test_quartic_with_shampine_midpoint_is_dopri5s_dense_output():
    # Dopri5's continuous extension is this same quartic.
    info = _rotation_step(0.3)
    quartic = _Dopri5Quartic(t0=0.0, t1=0.3, **info)
    own = jd.Dopri5.interpolation_cls(t0=0.0, t1=0.3, **info)
    for t in (0.05, 0.13, 0.21, 0.29):
        np.testing.assert_allclose(quartic.evaluate(t), own.evaluate(t), atol=1e-14)


def test_quartic_with_shampine_midpoint_is_fourth_order():
    # Local error O(h^5) at interior times: 32-fold less per halving.
    errors = []
    for dt in (0.4, 0.2, 0.1):
        quartic = _Dopri5Quartic(t0=0.0, t1=dt, **_rotation_step(dt))
        times = dt * np.array([0.2, 0.45, 0.8])
        exact = np.stack([np.sin(times), np.cos(times)], axis=1)
        got = np.stack([np.asarray(quartic.evaluate(t)) for t in times])
        errors.append(float(np.max(np.abs(got - exact))))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 4.5), rates
