"""The checkpointed loop's linearising backward pass (`_while_linear`): where the
differentiated parameters dominate (a neural vector field), each segment is
linearised while it is recomputed and the parameters' cotangent is pulled back
a block of iterations at a time (or, where that does not fit, with each
iteration's residuals stored with respect to the parameters too: `full`). Its
gradients must equal the plain backward pass's, with constant and adaptive
steps (segments cut short), saved outputs, under `vmap` with one lane, in
float32 and float64; and it must be taken where it applies and not elsewhere.
Without differentiated parameters (a gradient with respect to a large `y0`),
the same, and equal to forward mode."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiffeq as jd
from jaxdiffeq import _while_backward

WIDTH = 384


class _Field(eqx.Module):
    w_in: jax.Array
    w_hidden: jax.Array
    w_out: jax.Array

    def __call__(self, t, y, args):
        h = jnp.tanh(self.w_in @ y)
        h = jax.nn.softplus(self.w_hidden @ h + jnp.sin(t))
        return self.w_out @ h - args * y


def _problem(dtype):
    rng = np.random.default_rng(3)
    field = _Field(
        jnp.asarray(rng.normal(size=(WIDTH, 3)), dtype),
        jnp.asarray(rng.normal(size=(WIDTH, WIDTH)) / WIDTH, dtype),
        jnp.asarray(0.3 * rng.normal(size=(3, WIDTH)) / np.sqrt(WIDTH), dtype),
    )
    y0 = jnp.asarray([0.5, -0.2, 0.1], dtype)
    return field, y0


def _loss(field, y0, adaptive):
    dtype = y0.dtype
    ts = jnp.linspace(0.0, 1.5, 6, dtype=dtype)
    if adaptive:
        solver, controller = jd.Heun(), jd.PIDController(rtol=1e-3, atol=1e-5)
    else:
        solver, controller = jd.Heun(), jd.ConstantStepSize()
    sol = jd.diffeqsolve(
        jd.ODETerm(field),
        solver,
        jnp.zeros((), dtype),
        jnp.asarray(1.5, dtype),
        jnp.asarray(0.1, dtype),
        y0,
        jnp.asarray(0.2, dtype),
        saveat=jd.SaveAt(ts=ts, t1=True),
        stepsize_controller=controller,
        max_steps=32,
    )
    return jnp.sum(sol.ys**2)


@pytest.fixture
def taken(monkeypatch):
    """Records the traces of the linearising backward pass (whether `full`)."""
    calls = []
    inner = _while_backward.backward_static_linear

    def spy(*args, full=False):
        calls.append(full)
        return inner(*args, full=full)

    monkeypatch.setattr(_while_backward, "backward_static_linear", spy)
    return calls


def _grads(fn, *args, linearise, monkeypatch):
    monkeypatch.setattr(_while_backward, "LINEARISE", linearise)
    # The compiled program depends on the flag, but the solve's is cached by its
    # arguments alone (`equinox.filter_jit`): trace it afresh.
    jax.clear_caches()
    return jax.jit(lambda *a: fn(*a))(*args)


def _close(a, b, dtype):
    rtol = 2e-5 if dtype == jnp.float32 else 1e-11
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(
            x, y, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(y)))
        )


_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "dtype, adaptive",
    [
        (jnp.float64, False),
        (jnp.float64, True),
        pytest.param(jnp.float32, False, marks=_SLOW),
        pytest.param(jnp.float32, True, marks=_SLOW),
    ],
)
def test_same_gradient_as_the_plain_pass(dtype, adaptive, taken, monkeypatch):
    field, y0 = _problem(dtype)
    grad = jax.grad(lambda f, y: _loss(f, y, adaptive), argnums=(0, 1))
    new = _grads(grad, field, y0, linearise=True, monkeypatch=monkeypatch)
    assert taken, "the linearising pass was not used"
    count = len(taken)
    old = _grads(grad, field, y0, linearise=False, monkeypatch=monkeypatch)
    assert len(taken) == count
    _close(new, old, dtype)


@pytest.mark.parametrize(
    "dtype, adaptive",
    [
        (jnp.float64, False),
        (jnp.float64, True),
        pytest.param(jnp.float32, True, marks=_SLOW),
    ],
)
def test_full_pass_same_gradient_as_the_plain_pass(dtype, adaptive, taken, monkeypatch):
    """Where the blocked pass does not fit its budget (here: none at all), the
    segment is linearised with respect to the parameters too."""
    monkeypatch.setattr(_while_backward, "MEMORY_SHARE", 10**12)
    plain = []
    inner = _while_backward._backward_static

    def spy(*args):
        plain.append(1)
        return inner(*args)

    monkeypatch.setattr(_while_backward, "_backward_static", spy)
    field, y0 = _problem(dtype)
    grad = jax.grad(lambda f, y: _loss(f, y, adaptive), argnums=(0, 1))
    # The solve's compiled program is cached by its arguments, not by the
    # flags: trace it afresh.
    jax.clear_caches()
    new = _grads(grad, field, y0, linearise=True, monkeypatch=monkeypatch)
    assert taken == [True] and not plain, (taken, plain)
    monkeypatch.setattr(_while_backward, "FULL_SHARE", 0)
    jax.clear_caches()
    old = _grads(grad, field, y0, linearise=True, monkeypatch=monkeypatch)
    assert taken == [True] and plain, (taken, plain)
    _close(new, old, dtype)


def test_one_lane_of_a_vmap(taken, monkeypatch):
    """`grad(vmap(...))` over one lane runs the unbatched pass on it, and
    `vmap(grad(...))` over one lane gives that lane's gradient."""
    field, y0 = _problem(jnp.float64)

    def total(field, y0s):
        return jnp.sum(jax.vmap(_loss, in_axes=(None, 0, None))(field, y0s, False))

    g_field, g_y0s = _grads(
        jax.grad(total, argnums=(0, 1)),
        field,
        y0[None],
        linearise=True,
        monkeypatch=monkeypatch,
    )
    assert taken
    single = jax.jit(jax.grad(_loss, argnums=(0, 1)), static_argnums=2)
    ref_field, ref_y0 = single(field, y0, False)
    _close(g_field, ref_field, jnp.float64)
    _close(g_y0s[0], ref_y0, jnp.float64)
    per_lane = jax.jit(
        jax.vmap(jax.grad(_loss, argnums=(0, 1)), in_axes=(None, 0, None)),
        static_argnums=2,
    )
    v_field, v_y0s = per_lane(field, y0[None], False)
    _close(jax.tree.map(lambda x: x[0], v_field), ref_field, jnp.float64)
    _close(v_y0s[0], ref_y0, jnp.float64)


def test_gradient_against_finite_differences(monkeypatch):
    field, y0 = _problem(jnp.float64)
    monkeypatch.setattr(_while_backward, "LINEARISE", True)
    g = jax.jit(jax.grad(lambda f: _loss(f, y0, False)))(field)
    rng = np.random.default_rng(0)
    direction = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), field)
    eps = 1e-6
    plus = jax.tree.map(lambda x, d: x + eps * d, field, direction)
    minus = jax.tree.map(lambda x, d: x - eps * d, field, direction)
    fd = (_loss(plus, y0, False) - _loss(minus, y0, False)) / (2 * eps)
    ad = sum(
        jnp.vdot(a, d) for a, d in zip(jax.tree.leaves(g), jax.tree.leaves(direction))
    )
    np.testing.assert_allclose(ad, fd, rtol=1e-6)


def test_not_taken_where_the_parameters_are_small(taken, monkeypatch):
    """A vector field with three parameters: a segment's residuals would take
    more memory than their cotangent, so the plain pass runs."""
    monkeypatch.setattr(_while_backward, "LINEARISE", True)

    def loss(args, y0):
        sol = jd.diffeqsolve(
            jd.ODETerm(lambda t, y, a: -a * y + jnp.sin(y)),
            jd.Heun(),
            0.0,
            1.0,
            0.05,
            y0,
            args,
            max_steps=64,
        )
        return jnp.sum(sol.ys**2)

    jax.jit(jax.grad(loss))(jnp.ones(3), jnp.ones(3))
    assert not taken


# Without differentiated parameters (a gradient with respect to `y0` alone) the
# pass keeps no states or cotangents; a linear vector field on a large state
# (past `_rows.LARGE`: own checkpoint rows, small rows read as values) stores
# almost no residuals, so it is taken.
M = 3 * 4096


def _heat(t, y, k):
    inner = y[2:] - 2 * y[1:-1] + y[:-2]
    return k * jnp.concatenate([y[1:2] - y[:1], inner, y[-2:-1] - y[-1:]])


def _heat_loss(y0, solver, controller, field=_heat, adjoint=None):
    sol = jd.diffeqsolve(
        jd.ODETerm(field),
        solver,
        jnp.asarray(0.0, y0.dtype),
        jnp.asarray(0.3, y0.dtype),
        jnp.asarray(0.01, y0.dtype),
        y0,
        jnp.asarray(20.0, y0.dtype),
        saveat=jd.SaveAt(ts=jnp.asarray([0.0, 0.1, 0.2, 0.3], y0.dtype)),
        stepsize_controller=controller,
        adjoint=jd.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
        max_steps=64,
    )
    return jnp.sum(jnp.sin(sol.ys))


@pytest.mark.parametrize(
    "dtype, solver",
    [
        (jnp.float64, jd.Euler()),
        (jnp.float64, jd.Heun()),
        pytest.param(jnp.float32, jd.Euler(), marks=_SLOW),
    ],
)
def test_without_parameters_same_gradient_as_the_plain_pass(
    dtype, solver, taken, monkeypatch
):
    x = jnp.linspace(0.0, 3.0, M, dtype=dtype)
    y0 = jnp.sin(x) + jnp.asarray(0.3, dtype) * jnp.cos(40 * x)
    grad = jax.grad(lambda y: _heat_loss(y, solver, jd.ConstantStepSize()))
    new = _grads(grad, y0, linearise=True, monkeypatch=monkeypatch)
    assert taken, "the linearising pass was not used"
    old = _grads(grad, y0, linearise=False, monkeypatch=monkeypatch)
    _close(new, old, dtype)
    # And it is the derivative: forward mode along a random direction.
    direction = jnp.asarray(np.random.default_rng(1).normal(size=M), dtype)
    forward = jd.ForwardMode()
    _, expected = jax.jvp(
        lambda y: _heat_loss(y, solver, jd.ConstantStepSize(), adjoint=forward),
        (y0,),
        (direction,),
    )
    rtol = 1e-4 if dtype == jnp.float32 else 1e-10
    np.testing.assert_allclose(jnp.vdot(new, direction), expected, rtol=rtol)


def test_without_parameters_adaptive_and_nonlinear(taken, monkeypatch):
    """Adaptive steps (segments cut short) through the pass; a nonlinear field,
    whose stages' derivatives are residuals too (state-sized, per stage), takes
    more than a quarter of the checkpoint store, and the plain pass runs."""
    x = jnp.linspace(0.0, 3.0, M)
    y0 = jnp.sin(x) + 0.3 * jnp.cos(40 * x)
    controller = jd.PIDController(rtol=1e-4, atol=1e-4)

    def nonlinear(t, y, k):
        return _heat(t, y, k) + y - y**3

    for field, expect_taken in [(_heat, True), (nonlinear, False)]:
        taken.clear()

        def loss(y, adjoint=None, field=field):
            return _heat_loss(y, jd.Heun(), controller, field, adjoint)

        grad = _grads(jax.grad(loss), y0, linearise=True, monkeypatch=monkeypatch)
        assert bool(taken) == expect_taken, field
        direction = jnp.asarray(np.random.default_rng(2).normal(size=M))
        forward = functools.partial(loss, adjoint=jd.ForwardMode())
        _, expected = jax.jvp(forward, (y0,), (direction,))
        np.testing.assert_allclose(jnp.vdot(grad, direction), expected, rtol=1e-9)
