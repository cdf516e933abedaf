"""`ImplicitEuler`, the first implicit solver: Diffrax's numbers and step counts,
first order on a stiff linear problem with an exact solution, gradients through
the stage equation (implicit function theorem) against finite differences and
across adjoints, `vmap`, float32, and its failures (a clear error without
tolerances for the root finder; a stage equation that does not converge is
retried by an adaptive controller and reported with constant steps)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

import jaxdiffeq as jd

LAMBDA = 1000.0


def _field(t, y, k):
    # Stiff, with an exact solution: y' = -k (y - cos t). (The times are float64
    # whatever the state's dtype.)
    return -k * (y - jnp.cos(t).astype(y.dtype))


def _exact(t, y0, k):
    # y = A cos t + B sin t + C exp(-k t) with A = k^2/(1+k^2), B = k/(1+k^2).
    a, b = k**2 / (1 + k**2), k / (1 + k**2)
    return a * np.cos(t) + b * np.sin(t) + (y0 - a) * np.exp(-k * t)


def _pid(dtype=jnp.float64):
    return jd.PIDController(rtol=1e-4, atol=1e-6)


def test_same_solution_and_steps_as_diffrax():
    y0 = jnp.array([0.0, 2.0])
    args = jnp.array(LAMBDA)
    ours = jd.diffeqsolve(
        jd.ODETerm(_field),
        jd.ImplicitEuler(),
        0.0,
        1.0,
        0.01,
        y0,
        args,
        stepsize_controller=_pid(),
    )
    theirs = diffrax.diffeqsolve(
        diffrax.ODETerm(_field),
        diffrax.ImplicitEuler(),
        0.0,
        1.0,
        0.01,
        y0,
        args,
        stepsize_controller=diffrax.PIDController(rtol=1e-4, atol=1e-6),
    )
    assert ours.stats["num_accepted_steps"] == theirs.stats["num_accepted_steps"]
    assert ours.stats["num_rejected_steps"] == theirs.stats["num_rejected_steps"]
    np.testing.assert_allclose(ours.ys, theirs.ys, rtol=1e-10)


def _constant(dt, k=LAMBDA, y0=2.0, dtype=jnp.float64):
    # Root-finding tolerances the dtype can reach (1e-12 is beyond float32's).
    tol = 1e-12 if dtype == jnp.float64 else 1e-6
    solver = jd.ImplicitEuler(root_finder=optx.Chord(rtol=tol, atol=tol))
    sol = jd.diffeqsolve(
        jd.ODETerm(_field),
        solver,
        0.0,
        1.0,
        dt,
        jnp.asarray(y0, dtype),
        jnp.asarray(k, dtype),
        max_steps=100_000,
    )
    return float(sol.ys[-1]), sol


def test_first_order_on_a_stiff_linear_problem():
    # Steps far beyond the explicit stability limit (2 / k = 0.002): stable, and
    # the error falls linearly with the step.
    dts = [1 / 50, 1 / 100, 1 / 200, 1 / 400]
    errors = [abs(_constant(dt)[0] - _exact(1.0, 2.0, LAMBDA)) for dt in dts]
    order = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(order - 1) < 0.3, (order, errors)


def test_float32():
    value, sol = _constant(1 / 100, dtype=jnp.float32)
    assert sol.ys.dtype == jnp.float32
    assert abs(value - _exact(1.0, 2.0, LAMBDA)) < 1e-4


def _loss(k, y0, adjoint, controller):
    sol = jd.diffeqsolve(
        jd.ODETerm(_field),
        jd.ImplicitEuler(root_finder=optx.Chord(rtol=1e-10, atol=1e-10)),
        0.0,
        0.5,
        0.01,
        y0,
        k,
        stepsize_controller=controller,
        adjoint=adjoint,
        saveat=jd.SaveAt(ts=jnp.linspace(0.1, 0.5, 5)),
    )
    return jnp.sum(sol.ys**2)


@pytest.mark.parametrize(
    "adjoint",
    [jd.RecursiveCheckpointAdjoint(), jd.DirectAdjoint()],
    ids=["checkpointed", "direct"],
)
def test_gradients_against_finite_differences(adjoint):
    k, y0 = jnp.array(30.0), jnp.array([0.5, -1.0])
    controller = jd.ConstantStepSize()
    g_k, g_y0 = jax.jit(jax.grad(_loss, argnums=(0, 1)), static_argnums=(2, 3))(
        k, y0, adjoint, controller
    )
    eps = 1e-6
    fd_k = (
        _loss(k + eps, y0, adjoint, controller)
        - _loss(k - eps, y0, adjoint, controller)
    ) / (2 * eps)
    np.testing.assert_allclose(g_k, fd_k, rtol=1e-6)
    direction = jnp.array([0.3, 0.7])
    fd_y0 = (
        _loss(k, y0 + eps * direction, adjoint, controller)
        - _loss(k, y0 - eps * direction, adjoint, controller)
    ) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(g_y0, direction), fd_y0, rtol=1e-6)
    # Forward mode gives the same derivative.
    _, tangent = jax.jvp(
        lambda k: _loss(k, y0, jd.ForwardMode(), controller), (k,), (jnp.ones(()),)
    )
    np.testing.assert_allclose(tangent, g_k, rtol=1e-8)


def test_vmap_over_initial_values_and_parameters():
    y0s = jnp.array([0.0, 1.0, 3.0])
    ks = jnp.array([10.0, 100.0, 1000.0])

    def solve(y0, k):
        return jd.diffeqsolve(
            jd.ODETerm(_field),
            jd.ImplicitEuler(),
            0.0,
            1.0,
            0.01,
            y0,
            k,
            stepsize_controller=_pid(),
        ).ys[-1]

    batched = jax.jit(jax.vmap(solve))(y0s, ks)
    for i in range(3):
        np.testing.assert_allclose(batched[i], solve(y0s[i], ks[i]), rtol=1e-12)
        assert abs(float(batched[i]) - _exact(1.0, float(y0s[i]), float(ks[i]))) < 1e-2


def test_root_finder_needs_tolerances_with_constant_steps():
    with pytest.raises(ValueError, match="takes its tolerances from the step-size"):
        jd.diffeqsolve(
            jd.ODETerm(_field),
            jd.ImplicitEuler(),
            0.0,
            1.0,
            0.1,
            jnp.array(1.0),
            jnp.array(1.0),
        )


def _cubic(t, y, args):
    # A stage equation Chord needs several iterations for at large steps.
    return -(y**3) - 10.0 * y


def test_nonconvergence_is_retried_or_reported():
    # One iteration with a tight tolerance cannot converge at dt = 0.5.
    tight = optx.Chord(rtol=1e-12, atol=1e-12)
    solver = jd.ImplicitEuler(root_finder=tight, root_find_max_steps=1)
    y0 = jnp.array(3.0)
    fixed = jd.diffeqsolve(jd.ODETerm(_cubic), solver, 0.0, 2.0, 0.5, y0, throw=False)
    assert fixed.result == jd.RESULTS.nonlinear_max_steps_reached
    assert "did not converge" in jd.RESULTS.message(fixed.result)
    with pytest.raises(Exception, match="did not converge"):
        jd.diffeqsolve(jd.ODETerm(_cubic), solver, 0.0, 2.0, 0.5, y0)
    # An adaptive controller rejects such steps and retries smaller ones.
    solver = jd.ImplicitEuler(root_find_max_steps=2)
    adaptive = jd.diffeqsolve(
        jd.ODETerm(_cubic),
        solver,
        0.0,
        2.0,
        0.5,
        y0,
        stepsize_controller=jd.PIDController(rtol=1e-4, atol=1e-6),
        throw=False,
    )
    assert adaptive.result == jd.RESULTS.successful
    assert int(adaptive.stats["num_rejected_steps"]) > 0
