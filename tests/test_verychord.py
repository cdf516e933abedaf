"""`VeryChord` on its own, through `optimistix.root_find`: what a failed
iteration returns, and that its root can still be differentiated (the implicit
solvers differentiate the stage equations of rejected steps too)."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

import jaxdiffeq as jd


def _residual(z, a):
    return jnp.sqrt(z) - a


def _divergent_root(a):
    # The derivative of sqrt at 4 is 0.25; iterating with 0.01 instead (first
    # component) overshoots: z goes 4 -> 104 -> -616 -> NaN, and the iteration
    # stops as divergent.
    finder = jd.VeryChord(rtol=1e-8, atol=1e-8)
    z0 = jnp.array([4.0, 4.0])
    state = finder.state_from(lx.DiagonalLinearOperator(jnp.array([0.01, 0.25])), z0)
    return optx.root_find(
        _residual, finder, z0, a, options=dict(init_state=state), throw=False
    )


def test_a_divergent_iteration_returns_its_starting_point():
    sol = _divergent_root(jnp.array(3.0))
    assert sol.result == optx.RESULTS.nonlinear_divergence
    np.testing.assert_array_equal(sol.value, [4.0, 4.0])


def test_a_divergent_root_can_be_differentiated():
    # optimistix linearises the equation at the returned root; at the last
    # iterate (NaN) that linear solve was NaN, and lineax raised.
    grad = jax.grad(lambda a: _divergent_root(a).value[0])(jnp.array(3.0))
    assert np.isfinite(grad)


def test_a_converged_root_and_its_derivative():
    finder = jd.VeryChord(rtol=1e-10, atol=1e-10)
    z0 = jnp.array([4.0])

    def root(a):
        state = finder.state_from(lx.DiagonalLinearOperator(jnp.array([0.25])), z0)
        return optx.root_find(
            _residual, finder, z0, a, options=dict(init_state=state)
        ).value[0]

    a = jnp.array(2.1)
    np.testing.assert_allclose(root(a), 2.1**2, rtol=1e-9)
    np.testing.assert_allclose(jax.grad(root)(a), 2 * 2.1, rtol=1e-9)
