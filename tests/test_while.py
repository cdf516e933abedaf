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
        jd.while_loop(lambda i: i < 3, lambda i: i + 1, 0, kind="scan")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="checkpoints"):
        jd.while_loop(lambda i: i < 3, lambda i: i + 1, 0, kind="checkpointed")
    with pytest.raises(ValueError, match="max_steps"):
        jd.while_loop(lambda i: i < 3, lambda i: i + 1, 0, kind="bounded")
    with pytest.raises(ValueError, match="max_steps"):
        jd.while_loop(lambda i: i < 3, lambda i: i + 1, 0, max_steps=-1)


# ------------------------------------------------------------ reverse-mode kinds


def _decay(lam, n, kind, checkpoints=None, calls=None):
    """n explicit Euler steps of y' = -lam y + sin(y) in a data-dependent loop;
    `calls` counts the bodies executed."""

    def cond(carry):
        return carry[0] < n

    def body(carry):
        if calls is not None:
            jax.debug.callback(lambda: calls.append(1))
        i, y = carry
        return i + 1, y + 0.01 * (-lam * y + jnp.sin(y))

    init = (jnp.asarray(0), jnp.array([1.0, 2.0]))
    out = jd.while_loop(
        cond, body, init, max_steps=1000, kind=kind, checkpoints=checkpoints
    )
    return jnp.sum(out[1] ** 2)


def _unrolled(lam, n):
    y = jnp.array([1.0, 2.0])
    for _ in range(n):
        y = y + 0.01 * (-lam * y + jnp.sin(y))
    return jnp.sum(y**2)


@pytest.mark.parametrize(
    "kind, checkpoints",
    [
        ("bounded", None),
        ("checkpointed", None),
        ("checkpointed", 2),
        ("checkpointed", 7),
        ("checkpointed", 60),  # static segments of about 20 iterations
    ],
)
def test_reverse_mode_equals_unrolled(kind, checkpoints):
    """The gradient through the loop equals the gradient of the unrolled Python
    loop (the same operations), for any number of checkpoints."""
    grad = jax.jit(jax.grad(_decay), static_argnums=(2, 3))
    for n in (0, 1, 5, 37, 130):
        expected = jax.grad(_unrolled)(0.5, n)
        np.testing.assert_allclose(
            grad(0.5, n, kind, checkpoints), expected, rtol=1e-12, atol=1e-14
        )


def test_checkpointed_recomputes_each_step_at_most_once():
    """With the default checkpoints, reverse mode through n iterations evaluates
    the body n times forward, at most n + 1 times more to recompute, and n times
    under `jax.vjp`: at most 2n + 1 evaluations besides the n linearised ones."""
    calls = []

    def count(n, checkpoints=None):
        calls.clear()
        f = lambda lam, n: _decay(lam, n, "checkpointed", checkpoints, calls)  # noqa: E731
        g = jax.jit(jax.grad(f))(0.5, n)
        return g, len(calls)

    for n in (1, 10, 100, 400, 1000):
        _, evaluations = count(n)
        assert evaluations >= 2 * n  # the count is real: n forward, n linearised
        assert evaluations - n <= 2 * n + 1, (n, evaluations)
    # With too few checkpoints the count grows past that bound (the schedule
    # trades recomputation for memory), and the gradient is still exact.
    g, evaluations = count(400, checkpoints=4)
    assert evaluations - 400 > 2 * 400 + 1
    np.testing.assert_allclose(g, jax.grad(_unrolled)(0.5, 400), rtol=1e-12)
    # More checkpoints mean fewer recomputations: with one per iteration there
    # are none (n forward evaluations, n linearised ones).
    g, evaluations = count(300, checkpoints=1000)
    assert evaluations == 2 * 300
    np.testing.assert_allclose(g, jax.grad(_unrolled)(0.5, 300), rtol=1e-12)
    _, fewer = count(300, checkpoints=200)
    _, default = count(300)
    assert 2 * 300 < fewer < default


def test_bounded_supports_forward_mode_and_hessians():
    f = lambda lam: _decay(lam, 20, "bounded")  # noqa: E731
    g = lambda lam: _unrolled(lam, 20)  # noqa: E731
    np.testing.assert_allclose(jax.jacfwd(f)(0.5), jax.jacfwd(g)(0.5), rtol=1e-12)
    np.testing.assert_allclose(jax.hessian(f)(0.5), jax.hessian(g)(0.5), rtol=1e-10)


def test_checkpointed_differentiates_closed_over_arrays_and_buffers():
    """The body closes over `w` (differentiated) and writes each iterate into a
    buffer that is excluded from checkpoints; both gradients are exact."""

    def f(w, kind):
        def body(carry):
            i, y, buf = carry
            y = jnp.tanh(w * y)
            return i + 1, y, buf.at[i].set(y)

        init = (jnp.asarray(0), jnp.asarray(0.3), jnp.zeros(12))
        _, y, buf = jd.while_loop(
            lambda c: c[0] < 12,
            body,
            init,
            max_steps=12,
            kind=kind,
            checkpoints=3,
            buffers=lambda c: c[2],
        )
        return jnp.sum(buf * jnp.arange(12.0)) + y

    def unrolled(w):
        y, total = jnp.asarray(0.3), 0.0
        for i in range(12):
            y = jnp.tanh(w * y)
            total = total + i * y
        return total + y

    expected = jax.grad(unrolled)(1.3)
    for kind in ("checkpointed", "bounded"):
        np.testing.assert_allclose(jax.grad(f)(1.3, kind), expected, rtol=1e-12)


def test_checkpointed_rejects_forward_mode():
    with pytest.raises(TypeError, match="jvp"):
        jax.jvp(lambda lam: _decay(lam, 3, "checkpointed"), (0.5,), (1.0,))


def test_checkpointed_linearises_only_what_depends_on_the_inputs():
    """A carry leaf that depends on nothing being differentiated is left out of
    every vector-Jacobian product: here it is updated by a callback, which has no
    derivative rule and would raise if it were linearised."""

    def host_cos(y):
        return np.cos(y)

    def f(w):
        def body(carry):
            i, x, y = carry
            y = jax.pure_callback(host_cos, jax.ShapeDtypeStruct(y.shape, y.dtype), y)
            return i + 1, jnp.sin(w * x) + 0.1 * x, y

        init = (jnp.asarray(0), jnp.asarray(0.5), jnp.asarray(0.3))
        _, x, y = jd.while_loop(
            lambda c: c[0] < 7, body, init, max_steps=10, kind="checkpointed"
        )
        return x + y

    def unrolled(w):
        x = 0.5
        for _ in range(7):
            x = jnp.sin(w * x) + 0.1 * x
        return x

    np.testing.assert_allclose(jax.grad(f)(1.3), jax.grad(unrolled)(1.3), rtol=1e-12)
