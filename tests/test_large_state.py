"""A large state (the 1-D heat equation by the method of lines, 10^5 points):
each explicit Runge–Kutta solver's constant-step solution equals a plain NumPy
loop over the same steps with the solver's Butcher tableau (the large-leaf
layout of the stage buffer, stage axis first, is what this exercises); and the
gradient of a large adaptive solve in the reverse-mode loops, which update large
leaves of the carry by a `lax.cond`, equals forward mode's."""

import jax
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


# A state past `select.COND_SIZE` elements: a reverse-mode loop updates it by a
# `lax.cond` (the forward loop and forward mode by a `select`).
M = 3 * 4096


def _reaction_diffusion(t, y, k):
    return k * _laplacian(y, jnp) + y - y**3 + 0.1 * jnp.sin(t)


@pytest.mark.parametrize(
    "adjoint", [jd.RecursiveCheckpointAdjoint(), jd.DirectAdjoint()]
)
@pytest.mark.parametrize("saveat", ["t1", "ts"])
def test_large_state_gradient_equals_forward_mode(adjoint, saveat):
    """d/dkappa of an adaptive solve (rejected steps included) by the reverse-mode
    loops equals forward mode's through the plain loop, and the loss itself is
    the plain loop's."""
    x = jnp.linspace(0.0, 3.0, M)
    y0 = jnp.sin(x) + 0.5 * jnp.cos(40.0 * x)
    ts = jnp.linspace(0.0, 0.5, 7)
    save = jd.SaveAt(t1=True) if saveat == "t1" else jd.SaveAt(ts=ts)

    def loss(kappa, adjoint):
        sol = jd.diffeqsolve(
            jd.ODETerm(_reaction_diffusion),
            jd.Tsit5(),
            0.0,
            0.5,
            0.05,
            y0,
            kappa,
            saveat=save,
            stepsize_controller=jd.PIDController(rtol=1e-5, atol=1e-5),
            adjoint=adjoint,
            max_steps=64,
        )
        assert sol.ys is not None and sol.stats is not None
        return jnp.sum(sol.ys**2), sol.stats["num_rejected_steps"]

    kappa = jnp.asarray(30.0)
    (value, rejected), grad = jax.value_and_grad(loss, has_aux=True)(kappa, adjoint)
    (expected_value, _), expected = jax.jvp(
        lambda k: loss(k, jd.ForwardMode()), (kappa,), (jnp.ones_like(kappa),)
    )
    assert int(rejected) > 0
    np.testing.assert_allclose(float(value), float(expected_value), rtol=1e-12)
    np.testing.assert_allclose(float(grad), float(expected[0]), rtol=1e-9)


class _PlainODETerm(jd.ODETerm):
    """The same term with `prod` overridden (to the same thing), so that the solver
    keeps `y0` out of its stage buffer (the layout for other terms)."""

    def prod(self, vf, control):
        return super().prod(vf, control)


def _pytree_field(t, y, k):
    big = k * _laplacian(y["big"], jnp) + jnp.sin(t).astype(y["big"].dtype)
    return {"big": big, "small": -y["small"] * jnp.sum(y["big"][:3] ** 2)}


@pytest.mark.parametrize("solver", [jd.Heun(), jd.Tsit5(), jd.Dopri8()])
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_stage_inputs_folded_into_the_buffer_equal_the_plain_sums(solver, dtype):
    """An ODE term's large leaves get `y0` as an extra row of the stage buffer, so
    that a stage's input is one product with the buffer: an adaptive solve forwards
    and backwards in time (a small leaf beside, which keeps the other layout)
    equals the same solve with the plain sums, to rounding."""
    x = jnp.linspace(0.0, 3.0, 500)
    y0 = {
        "big": (jnp.sin(x) + 0.1 * jnp.cos(40.0 * x)).astype(dtype),
        "small": jnp.asarray([1.0, -2.0, 0.5], dtype),
    }
    ts = jnp.linspace(0.0, 0.3, 5)
    tol = 1e-12 if dtype == jnp.float64 else 1e-5

    def solve(term_cls, backward):
        span = (0.3, 0.0) if backward else (0.0, 0.3)
        return jd.diffeqsolve(
            term_cls(_pytree_field),
            solver,
            *span,
            -0.01 if backward else 0.01,
            y0,
            jnp.asarray(2.0, dtype),
            saveat=jd.SaveAt(ts=ts[::-1] if backward else ts, dense=True),
            stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-6),
        )

    for backward in (False, True):
        folded, plain = solve(jd.ODETerm, backward), solve(_PlainODETerm, backward)
        assert folded.stats is not None and plain.stats is not None
        assert folded.ys is not None and plain.ys is not None
        assert folded.stats["num_steps"] == plain.stats["num_steps"]
        for key in ("big", "small"):
            assert folded.ys[key].dtype == dtype
            np.testing.assert_allclose(
                folded.ys[key], plain.ys[key], rtol=tol, atol=tol
            )
            t_mid = jnp.asarray(0.123)
            np.testing.assert_allclose(
                folded.evaluate(t_mid)[key],
                plain.evaluate(t_mid)[key],
                rtol=tol,
                atol=tol,
            )


@pytest.mark.parametrize(
    "adjoint", [jd.RecursiveCheckpointAdjoint(), jd.ReversibleAdjoint()]
)
def test_reverse_only_stage_inputs_give_the_plain_gradient(adjoint):
    """The loops differentiated in reverse mode alone take the stage inputs of
    large leaves through `runge_kutta._reverse_stage_input` (its own backward
    rule): the gradient with respect to the initial state (a large and a small
    leaf), the parameter and the end time equals `DirectAdjoint`'s, which
    differentiates the plain sums."""
    x = jnp.linspace(0.0, 3.0, 500)
    y0 = {"big": jnp.sin(x) + 0.1 * jnp.cos(40.0 * x), "small": jnp.ones(3)}

    def loss(y0, kappa, t1, adjoint):
        sol = jd.diffeqsolve(
            jd.ODETerm(_pytree_field),
            jd.Tsit5(),
            0.0,
            t1,
            0.01,
            y0,
            kappa,
            adjoint=adjoint,
            max_steps=64,
        )
        assert sol.ys is not None
        return jnp.sum(sol.ys["big"] ** 2) + jnp.sum(jnp.sin(sol.ys["small"]))

    args = (y0, jnp.asarray(2.0), jnp.asarray(0.3))
    argnums = (0, 1) if isinstance(adjoint, jd.ReversibleAdjoint) else (0, 1, 2)
    ours = jax.grad(loss, argnums=argnums)(*args, adjoint)
    plain = jax.grad(loss, argnums=argnums)(*args, jd.DirectAdjoint())
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
