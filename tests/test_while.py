"""The public `jaxdiffeq.while_loop`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiffeq as jd


def _newton_sqrt(a, max_steps=None):
    """Newton's iteration for sqrt(a): a data-dependent number of iterations."""

    def cond(carry):
        x, _ = carry
        return jnp.abs(x * x - a) > 1e-12 * a

    def body(carry):
        x, n = carry
        return 0.5 * (x + a / x), n + 1

    return jd.while_loop(cond, body, (a, 0), max_steps=max_steps)


def test_runs_until_condition_false():
    x, n = _newton_sqrt(jnp.asarray(2.0))
    np.testing.assert_allclose(x, np.sqrt(2.0), rtol=1e-12)
    assert 3 <= int(n) <= 10


def test_max_steps_bounds_iterations():
    x, n = _newton_sqrt(jnp.asarray(2.0), max_steps=2)
    assert int(n) == 2
    np.testing.assert_allclose(x, 1.4166666666666667, rtol=1e-15)
    assert int(jd.while_loop(lambda i: i < 10, lambda i: i + 1, 0, max_steps=4)) == 4
    assert int(jd.while_loop(lambda i: i < 10, lambda i: i + 1, 0, max_steps=0)) == 0


def test_jit_vmap_and_jvp():
    a = jnp.array([2.0, 9.0, 1e6])
    x, n = jax.jit(jax.vmap(_newton_sqrt))(a)
    np.testing.assert_allclose(x, np.sqrt(a), rtol=1e-12)
    # Lanes run different numbers of iterations.
    assert len(set(np.asarray(n).tolist())) > 1
    value, tangent = jax.jvp(lambda a: _newton_sqrt(a)[0], (4.0,), (1.0,))
    np.testing.assert_allclose(value, 2.0, rtol=1e-12)
    np.testing.assert_allclose(tangent, 0.25, rtol=1e-9)  # d sqrt(a)/da = 1/(2 sqrt a)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        jd.while_loop(lambda i: i < 3, lambda i: i + 1, 0, kind="checkpointed")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="max_steps"):
        jd.while_loop(lambda i: i < 3, lambda i: i + 1, 0, max_steps=-1)
