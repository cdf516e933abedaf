"""A large state (the 1-D heat equation by the method of lines, 10^5 points):
each explicit Runge–Kutta solver's constant-step solution equals a plain NumPy
loop over the same steps with the solver's Butcher tableau (the large-leaf
layout of the stage buffer, stage axis first, is what this exercises)."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiffeq as jd

N = 100_000
NUM_STEPS = 10
DT = 0.01


def _laplacian(y, xp):
    inner = y[2:] - 2 * y[1:-1] + y[:-2]
    return xp.concatenate([y[1:2] - y[:1], inner, y[-2:-1] - y[-1:]])


def _numpy_rk(tableau, y, dt, num_steps, kappa):
    a = tableau.a_matrix()
    s = tableau.num_stages
    for _ in range(num_steps):
        k = np.zeros((s, y.size))
        for i in range(s):
            k[i] = kappa * _laplacian(y + dt * (a[i, :i] @ k[:i]), np)
        y = y + dt * (tableau.b_sol @ k)
    return y


@pytest.mark.parametrize("solver", [jd.Heun(), jd.Bosh3(), jd.Tsit5(), jd.Dopri5()])
def test_large_state_equals_a_plain_loop(solver):
    x = np.linspace(0.0, 3.0, N)
    y0 = np.sin(x) + 0.1 * np.cos(40.0 * x)
    kappa = 0.2
    sol = jd.diffeqsolve(
        jd.ODETerm(lambda t, y, k: k * _laplacian(y, jnp)),
        solver,
        0.0,
        NUM_STEPS * DT,
        DT,
        jnp.asarray(y0),
        jnp.asarray(kappa),
    )
    assert sol.ys is not None
    expected = _numpy_rk(type(solver).tableau, y0, DT, NUM_STEPS, kappa)
    assert sol.stats["num_accepted_steps"] == NUM_STEPS
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), expected, rtol=0, atol=1e-13)
