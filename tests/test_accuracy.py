"""Accuracy on standard problems against an independent reference: SciPy's DOP853
at rtol = atol = 1e-13.

The error is measured at 11 times (step ends and interpolated values alike) in
units of the tolerance, `max |y - y_ref| / (atol + rtol |y_ref|)`. A global error
is a local error amplified by the problem, so the allowed multiple depends on the
problem's conditioning: small for Lorenz on [0, 1] and Van der Pol, larger for the
close encounters of Pleiades and Arenstorf (on which SciPy's own RK45 at the same
tolerance is off by ~300x and ~3e4x the tolerance). Dopri8's interpolated values
are less accurate than its steps (its dense output is fifth order), which shows
on Van der Pol.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import lorenz
from scipy.integrate import solve_ivp

import jaxdiffeq as jd


def van_der_pol(t, y, args):
    del t, args
    mu = 1.0
    return jnp.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def pleiades(t, y, args):
    """Seven bodies in the plane with masses 1..7 (Hairer, Nørsett & Wanner, I,
    II.10). State: x (7), y (7), x' (7), y' (7)."""
    del t, args
    x, yy, vx, vy = y[:7], y[7:14], y[14:21], y[21:]
    mass = jnp.arange(1.0, 8.0)
    dx = x[None, :] - x[:, None]
    dy = yy[None, :] - yy[:, None]
    diagonal = jnp.eye(7, dtype=bool)
    r3 = jnp.where(diagonal, 1.0, (dx**2 + dy**2) ** 1.5)
    ax = jnp.sum(jnp.where(diagonal, 0.0, mass[None, :] * dx / r3), axis=1)
    ay = jnp.sum(jnp.where(diagonal, 0.0, mass[None, :] * dy / r3), axis=1)
    return jnp.concatenate([vx, vy, ax, ay])


ARENSTORF_MU = 0.012277471
ARENSTORF_PERIOD = 17.0652165601579625588917206249


def arenstorf(t, y, args):
    """The restricted three-body problem (Earth, Moon, satellite) in the rotating
    frame; from these initial values the orbit is periodic (Hairer, Nørsett &
    Wanner, I, II.0)."""
    del t, args
    x, yy, vx, vy = y[0], y[1], y[2], y[3]
    mu, mu_earth = ARENSTORF_MU, 1 - ARENSTORF_MU
    d1 = ((x + mu) ** 2 + yy**2) ** 1.5
    d2 = ((x - mu_earth) ** 2 + yy**2) ** 1.5
    ax = x + 2 * vy - mu_earth * (x + mu) / d1 - mu * (x - mu_earth) / d2
    ay = yy - 2 * vx - mu_earth * yy / d1 - mu * yy / d2
    return jnp.stack([vx, vy, ax, ay])


PROBLEMS = {
    # name: (vector field, y0, t1, allowed error in units of the tolerance)
    "lorenz": (lorenz, [1.0, 1.0, 1.0], 1.0, 50),
    "van_der_pol": (van_der_pol, [2.0, 0.0], 10.0, 100),
    "pleiades": (
        pleiades,
        [3, 3, -1, -3, 2, -2, 2]
        + [3, -3, 2, 0, 0, -4, 4]
        + [0, 0, 0, 0, 0, 1.75, -1.5]
        + [0, 0, 0, -1.25, 1, 0, 0],
        3.0,
        2000,
    ),
    "arenstorf": (
        arenstorf,
        [0.994, 0.0, 0.0, -2.00158510637908252240537862224],
        ARENSTORF_PERIOD,
        2e5,
    ),
}


@functools.cache
def reference(problem):
    vector_field, y0, t1, _ = PROBLEMS[problem]
    ts = np.linspace(0.0, t1, 11)
    jitted = jax.jit(vector_field)
    sol = solve_ivp(
        lambda t, y: np.asarray(jitted(t, y, None)),
        (0.0, t1),
        np.asarray(y0, dtype=np.float64),
        method="DOP853",
        rtol=1e-13,
        atol=1e-13,
        t_eval=ts,
    )
    assert sol.success
    return ts, sol.y.T


def test_reference_arenstorf_is_periodic():
    """Checks the vector field (and the reference): the Arenstorf orbit closes."""
    _, ys = reference("arenstorf")
    np.testing.assert_allclose(ys[-1], PROBLEMS["arenstorf"][1], atol=1e-7)


def scaled_error(ys, ys_ref, tol):
    return float(np.max(np.abs(ys - ys_ref) / (tol + tol * np.abs(ys_ref))))


@pytest.mark.parametrize("solver", [jd.Tsit5(), jd.Dopri5(), jd.Dopri8()], ids=str)
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_accuracy_against_scipy(problem, solver):
    vector_field, y0, t1, allowed = PROBLEMS[problem]
    ts, ys_ref = reference(problem)

    def solve(tol):
        # Tolerances as arrays: one compile for both tolerances.
        tol = jnp.asarray(tol)
        sol = jd.diffeqsolve(
            jd.ODETerm(vector_field),
            solver,
            0.0,
            t1,
            None,
            jnp.asarray(y0, dtype=jnp.float64),
            saveat=jd.SaveAt(ts=ts),
            stepsize_controller=jd.PIDController(rtol=tol, atol=tol),
            max_steps=20_000,
        )
        assert sol.result == jd.RESULTS.successful
        return np.asarray(sol.ys)

    tight = scaled_error(solve(1e-10), ys_ref, 1e-10)
    assert tight < allowed
    # Tolerance proportionality: 1000x tighter tolerance, at least 50x smaller
    # error (the global error of a p-th order method shrinks like tol^(p/(p+1))).
    loose_error = scaled_error(solve(1e-7), ys_ref, 1e-7) * 1e-7
    assert tight * 1e-10 < loose_error / 50
