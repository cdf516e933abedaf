"""`VeryChord` on its own, through `optimistix.root_find`: what a failed
iteration returns, and that its root can still be differentiated (the implicit
solvers differentiate the stage equations of rejected steps too), and that a
recorded iteration can be repeated (`replay`)."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

import jaxdiffeq as jd
from jaxdiffeq._verychord import replay_record


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


def _chord_root(a, replay):
    # A chord iteration with a matrix 10% off the derivative: linear
    # convergence, a few iterations to the tolerance.
    finder = jd.VeryChord(rtol=1e-6, atol=1e-6)
    z0 = jnp.array([4.0])
    state = finder.state_from(lx.DiagonalLinearOperator(jnp.array([0.225])), z0)
    options = dict(init_state=state)
    if replay is not None:
        options["replay"] = replay
    return optx.root_find(
        _residual, finder, z0, a, options=options, throw=False, max_steps=50
    )


def test_a_replayed_iteration_stops_where_it_was_told():
    # `replay` (what a recomputation in the backward pass passes) stops after
    # the recorded number of iterations with the recorded outcome, whatever
    # the tolerance test says.
    a = jnp.array(2.1)
    free = _chord_root(a, None)
    steps = int(free.state.step)
    assert free.result == optx.RESULTS.successful and steps > 2
    again = _chord_root(a, replay_record(jnp.asarray(steps), jnp.asarray(0)))
    assert int(again.state.step) == steps
    np.testing.assert_array_equal(again.value, free.value)
    early = _chord_root(a, replay_record(jnp.asarray(2), jnp.asarray(0)))
    assert int(early.state.step) == 2 and early.result == optx.RESULTS.successful
    assert abs(float(early.value[0]) - 2.1**2) > 1e-5  # not converged: as told
    failed = _chord_root(a, replay_record(jnp.asarray(1), jnp.asarray(3)))
    assert failed.result != optx.RESULTS.successful
    np.testing.assert_array_equal(failed.value, [4.0])  # its starting point
    # 0 records nothing: the tolerance decides.
    np.testing.assert_array_equal(_chord_root(a, jnp.asarray(0)).value, free.value)
