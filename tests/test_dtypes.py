"""Every solver, controller, adjoint, `SaveAt` kind, dense output and progress
meter works under strict dtype promotion and rank promotion "raise" (the suite's
configuration, see conftest.py), in float32 and float64, with 64-bit mode on
(float32 state, float64 times) and off.

A float32 state stays float32 whatever the dtype of the times; the outputs,
the dense output and the gradients keep the dtypes of what they are of.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SOLVERS

import jaxdiffeq as jd

# Methods that `PIDController` can drive (an error estimate and no fixed-step
# restriction).
_NO_ERROR_ESTIMATE = {
    "Euler",
    "Midpoint",
    "Ralston",
    "LeapfrogMidpoint",
    "Reversible(Euler)",
    "Reversible(Midpoint)",
}


def _vector_field(t, y, k):
    # Non-autonomous, with the time cast to the state's dtype as a strict user
    # writes it.
    return -k * y + jnp.cos(t).astype(y.dtype)


def _solve(solver, dtype, time_dtype, controller, saveat, adjoint=None, dt0=0.05):
    adjoint = jd.RecursiveCheckpointAdjoint() if adjoint is None else adjoint

    def solve(y0, k):
        return jd.diffeqsolve(
            jd.ODETerm(_vector_field),
            solver,
            time_dtype(0.0),
            time_dtype(1.0),
            None if dt0 is None else time_dtype(dt0),
            y0,
            k,
            saveat=saveat,
            stepsize_controller=controller,
            adjoint=adjoint,
            max_steps=256,
        )

    return solve, jnp.ones(3, dtype), jnp.asarray(0.5, dtype)


def _exact(t):
    # y' = -y/2 + cos t, y(0) = 1.
    t = np.asarray(t, np.float64)
    particular = (0.5 * np.cos(t) + np.sin(t)) / 1.25
    return (1 - 0.4) * np.exp(-0.5 * t)[..., None] + particular[..., None]


def _check_solution(solver_case, dtype, time_dtype, controller, dt0):
    ts = jnp.linspace(0.0, 1.0, 5, dtype=time_dtype)
    saveat = jd.SaveAt(t0=True, ts=ts, steps=True, t1=True, dense=True)
    solve, y0, k = _solve(
        solver_case.solver, dtype, time_dtype, controller, saveat, dt0=dt0
    )
    sol = solve(y0, k)
    assert sol.ys.dtype == dtype
    assert sol.ts.dtype == time_dtype
    t = time_dtype(0.3)
    assert sol.evaluate(t).dtype == dtype
    assert sol.derivative(t).dtype == dtype
    # Every output is accurate (to the step size's error: 5e-2 covers Euler).
    saved = np.isfinite(np.asarray(sol.ts))
    times = np.asarray(sol.ts)[saved]
    np.testing.assert_allclose(
        np.asarray(sol.ys)[saved], _exact(times).repeat(3, axis=1), atol=5e-2
    )


@pytest.mark.parametrize("case", SOLVERS, ids=[c.name for c in SOLVERS])
def test_every_solver_float32_state_float64_times(case):
    _check_solution(case, jnp.float32, jnp.float64, jd.ConstantStepSize(), 0.05)
    if case.name not in _NO_ERROR_ESTIMATE:
        pid = jd.PIDController(rtol=1e-4, atol=1e-6)
        _check_solution(case, jnp.float32, jnp.float64, pid, None)


def _controllers(time_dtype):
    ts = jnp.linspace(0.0, 1.0, 5, dtype=time_dtype)
    jump = jnp.array([0.55], time_dtype)
    return {
        "StepTo": jd.StepTo(ts),
        "StepTo(int ts)": jd.StepTo(jnp.arange(2)),
        "PID(all options)": jd.PIDController(
            rtol=1e-4,
            atol=1e-6,
            pcoeff=0.3,
            icoeff=0.3,
            dcoeff=0.1,
            dtmin=1e-3,
            dtmax=0.5,
            step_ts=ts,
            jump_ts=jump,
        ),
        "PID(array tolerances)": jd.PIDController(
            rtol=jnp.asarray(1e-4),
            atol=jnp.asarray(1e-6),
            dtmin=1e-6,
            force_dtmin=False,
        ),
        "Clip(PID)": jd.ClipStepSizeController(
            jd.PIDController(rtol=1e-4, atol=1e-6), step_ts=ts, jump_ts=jump
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "StepTo",
        "StepTo(int ts)",
        "PID(all options)",
        "PID(array tolerances)",
        "Clip(PID)",
    ],
)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_every_controller(name, dtype):
    controller = _controllers(jnp.float64)[name]
    ts = jnp.linspace(0.0, 1.0, 5)
    solve, y0, k = _solve(
        jd.Tsit5(), dtype, jnp.float64, controller, jd.SaveAt(ts=ts), dt0=None
    )
    sol = solve(y0, k)
    assert sol.ys.dtype == dtype
    np.testing.assert_allclose(sol.ys, _exact(ts).repeat(3, axis=1), atol=1e-3)


_ADJOINTS = {
    "RecursiveCheckpointAdjoint": jd.RecursiveCheckpointAdjoint(),
    "RecursiveCheckpointAdjoint(checkpoints=3)": jd.RecursiveCheckpointAdjoint(3),
    "DirectAdjoint": jd.DirectAdjoint(),
    "BacksolveAdjoint": jd.BacksolveAdjoint(),
    "ReversibleAdjoint": jd.ReversibleAdjoint(),
}


@pytest.mark.parametrize("name", list(_ADJOINTS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_every_adjoint(name, dtype):
    ts = jnp.linspace(0.0, 1.0, 5)
    saveat = jd.SaveAt(t0=True, ts=ts, t1=True)
    controller = jd.PIDController(rtol=1e-5, atol=1e-7)
    solve, y0, k = _solve(
        jd.Tsit5(), dtype, jnp.float64, controller, saveat, _ADJOINTS[name], None
    )
    grads = jax.grad(lambda y0, k: jnp.sum(solve(y0, k).ys), argnums=(0, 1))(y0, k)
    assert grads[0].dtype == dtype and grads[1].dtype == dtype
    # Against float64 checkpointed gradients (the float32 ones agree to rounding
    # and the tolerances).
    solve64, y0_64, k_64 = _solve(
        jd.Tsit5(), jnp.float64, jnp.float64, controller, saveat, None, None
    )
    expected = jax.grad(lambda y0, k: jnp.sum(solve64(y0, k).ys), argnums=(0, 1))(
        y0_64, k_64
    )
    tol = 1e-3 if dtype == jnp.float32 else 1e-4
    for ours, theirs in zip(grads, expected):
        np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_forward_mode_implicit_adjoint_and_vmap(dtype):
    controller = jd.PIDController(rtol=1e-5, atol=1e-7)
    solve, y0, k = _solve(
        jd.Tsit5(),
        dtype,
        jnp.float64,
        controller,
        jd.SaveAt(t1=True),
        jd.ForwardMode(),
        None,
    )
    jac = jax.jacfwd(lambda k: solve(y0, k).ys)(k)
    assert jac.dtype == dtype

    def steady(k):
        sol = jd.diffeqsolve(
            jd.ODETerm(lambda t, y, k: k * (1 - y)),
            jd.Tsit5(),
            0.0,
            50.0,
            None,
            jnp.zeros(3, dtype),
            k,
            stepsize_controller=controller,
            adjoint=jd.ImplicitAdjoint(),
        )
        return jnp.sum(sol.ys)

    assert jax.grad(steady)(k).dtype == dtype

    def lane(y0):
        sol = jd.diffeqsolve(
            jd.ODETerm(_vector_field),
            jd.Tsit5(),
            0.0,
            1.0,
            None,
            y0,
            k,
            stepsize_controller=jd.PIDController(rtol=1e-5, atol=1e-7, unvmap_dt=True),
            throw=False,
        )
        return sol.ys

    assert jax.vmap(lane)(jnp.ones((4, 3), dtype)).dtype == dtype


@pytest.mark.parametrize(
    "meter", [jd.TextProgressMeter(), jd.TqdmProgressMeter()], ids=["text", "tqdm"]
)
def test_progress_meters_float32(meter, capsys):
    sol = jd.diffeqsolve(
        jd.ODETerm(_vector_field),
        jd.Tsit5(),
        0.0,
        1.0,
        0.1,
        jnp.ones(3, jnp.float32),
        jnp.asarray(0.5, jnp.float32),
        progress_meter=meter,
    )
    assert sol.ys.dtype == jnp.float32
    captured = capsys.readouterr()
    assert "100" in captured.out + captured.err


def test_mixed_dtype_pytree_state():
    y0 = {"single": jnp.ones(2, jnp.float32), "double": jnp.ones(3, jnp.float64)}

    def vector_field(t, y, args):
        return jax.tree.map(lambda x: -x + jnp.cos(t).astype(x.dtype), y)

    sol = jd.diffeqsolve(
        jd.ODETerm(vector_field),
        jd.Tsit5(),
        0.0,
        1.0,
        None,
        y0,
        saveat=jd.SaveAt(ts=jnp.linspace(0.0, 1.0, 3), dense=True),
        stepsize_controller=jd.PIDController(rtol=1e-5, atol=1e-7),
    )
    assert sol.ys["single"].dtype == jnp.float32
    assert sol.ys["double"].dtype == jnp.float64
    assert sol.evaluate(0.5)["single"].dtype == jnp.float32


def test_without_x64():
    """The two programs of the report (Euler + StepTo + SaveAt(ts); Tsit5 + PID +
    SaveAt(ts)), a gradient and dense output, with 64-bit mode off."""
    with jax.enable_x64(False):
        ts = jnp.linspace(0.0, 1.0, 11)
        term = jd.ODETerm(lambda t, y, args: -y)
        y0 = jnp.array([1.0, 2.0])
        sol = jd.diffeqsolve(
            term,
            jd.Euler(),
            0.0,
            1.0,
            None,
            y0,
            saveat=jd.SaveAt(ts=ts),
            stepsize_controller=jd.StepTo(ts),
        )
        assert sol.ys.dtype == jnp.float32 and sol.ts.dtype == jnp.float32

        def loss(y0):
            sol = jd.diffeqsolve(
                term,
                jd.Tsit5(),
                0.0,
                1.0,
                None,
                y0,
                saveat=jd.SaveAt(ts=ts, dense=True),
                stepsize_controller=jd.PIDController(rtol=1e-5, atol=1e-6),
            )
            assert sol.evaluate(0.5).dtype == jnp.float32
            return jnp.sum(sol.ys)

        grad = jax.grad(loss)(y0)
        assert grad.dtype == jnp.float32
        expected = np.sum(np.exp(-np.asarray(ts)))
        np.testing.assert_allclose(grad, [expected, expected], rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("case", SOLVERS, ids=[c.name for c in SOLVERS])
@pytest.mark.parametrize(
    "dtype, time_dtype",
    [
        (jnp.float32, jnp.float32),
        (jnp.float64, jnp.float32),
        (jnp.float64, jnp.float64),
    ],
    ids=["f32-f32", "f64-f32", "f64-f64"],
)
def test_every_solver_every_dtype_pair(case, dtype, time_dtype):
    _check_solution(case, dtype, time_dtype, jd.ConstantStepSize(), 0.05)
    if case.name not in _NO_ERROR_ESTIMATE:
        pid = jd.PIDController(rtol=1e-4, atol=1e-6)
        _check_solution(case, dtype, time_dtype, pid, None)
