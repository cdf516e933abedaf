"""`vmap` and forward-mode differentiation through a solve."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import lorenz, output_rows

import jaxdiffeq as jd

Y0S = jnp.array([[1.0, 1.0, 1.0], [2.0, -1.0, 20.0], [-5.0, 3.0, 10.0]])
LORENZ_ARGS = jnp.array([10.0, 28.0, 8.0 / 3.0])
TS = jnp.linspace(0.0, 1.0, 7)


def solve_lorenz(
    y0, args, controller, dt0=None, steps=False, max_steps=256, adjoint=None
):
    return jd.diffeqsolve(
        jd.ODETerm(lorenz),
        jd.Tsit5(),
        0.0,
        1.0,
        dt0,
        y0,
        args,
        saveat=jd.SaveAt(t0=True, ts=TS, steps=steps, t1=True),
        stepsize_controller=controller,
        max_steps=max_steps,
        adjoint=jd.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
    )


PID = jd.PIDController(rtol=1e-8, atol=1e-8)


def lane_result(batched_solution, i):
    return jd.RESULTS(np.asarray(batched_solution.result.value)[i])


@functools.cache
def batched_and_looped(controller_name):
    """(vmapped solution, list of single solutions) over `Y0S`, computed once."""
    controller, dt0 = {
        "pid": (PID, None),
        "constant": (jd.ConstantStepSize(), 0.01),
    }[controller_name]
    solve = eqx.filter_jit(
        lambda y0: solve_lorenz(y0, LORENZ_ARGS, controller, dt0, steps=True)
    )
    batched = jax.vmap(solve)(Y0S)
    looped = [solve(y0) for y0 in Y0S]
    return batched, looped


@pytest.mark.parametrize("controller_name", ["pid", "constant"])
def test_vmap_y0_equals_loop_at_ts(controller_name):
    batched, looped = batched_and_looped(controller_name)
    # The t0, ts and t1 rows; the steps rows are checked below.
    for i, single in enumerate(looped):
        rows = output_rows(batched.ts[i], TS)
        single_rows = output_rows(single.ts, TS)
        np.testing.assert_array_equal(batched.ts[i][rows], single.ts[single_rows])
        np.testing.assert_allclose(
            batched.ys[i][rows], single.ys[single_rows], rtol=1e-12, atol=1e-12
        )
        assert lane_result(batched, i) == jd.RESULTS.successful
        assert single.result == jd.RESULTS.successful


def test_vmap_y0_equals_loop_steps_constant():
    """With constant steps, the step outputs agree to rounding."""
    batched, looped = batched_and_looped("constant")
    for i, single in enumerate(looped):
        assert int(batched.stats["num_steps"][i]) == int(single.stats["num_steps"])
        np.testing.assert_allclose(batched.ts[i], single.ts, rtol=1e-14)
        np.testing.assert_allclose(batched.ys[i], single.ys, rtol=1e-12, atol=1e-12)


def test_vmap_y0_equals_loop_steps_pid():
    """With adaptive steps, each lane takes the steps its single solve takes.

    The step sizes are compared to 1e-8 only: the error estimate is a difference
    of stage sums with ~8 digits of cancellation at this tolerance, so rounding
    differences between batched and unbatched code move the steps slightly.
    """
    batched, looped = batched_and_looped("pid")
    for i, single in enumerate(looped):
        for name in ("num_steps", "num_accepted_steps", "num_rejected_steps"):
            assert int(batched.stats[name][i]) == int(single.stats[name])
        filled = np.isfinite(np.asarray(single.ts))
        np.testing.assert_array_equal(np.isfinite(np.asarray(batched.ts[i])), filled)
        np.testing.assert_allclose(
            np.asarray(batched.ts[i])[filled], np.asarray(single.ts)[filled], rtol=1e-8
        )
        assert np.all(np.isinf(np.asarray(batched.ys[i])[~filled]))


def test_vmap_lanes_take_different_steps():
    """Without `unvmap_dt`, each lane chooses its own steps."""
    batched, _ = batched_and_looped("pid")
    num_steps = np.asarray(batched.stats["num_steps"])
    assert len(set(num_steps.tolist())) > 1
    assert not np.array_equal(batched.ts[0], batched.ts[2])


def test_vmap_over_args():
    """y' = -k y with a batch of rates k: equals the loop and the exact solution."""

    def solve(k):
        return jd.diffeqsolve(
            jd.ODETerm(lambda t, y, args: -args * y),
            jd.Dopri5(),
            0.0,
            2.0,
            None,
            jnp.array([1.0, 2.0]),
            k,
            saveat=jd.SaveAt(ts=jnp.linspace(0.0, 2.0, 5)),
            stepsize_controller=jd.PIDController(rtol=1e-10, atol=1e-10),
        )

    rates = jnp.array([0.1, 1.0, 3.0, -0.5])
    batched = jax.vmap(solve)(rates)
    ts = np.linspace(0.0, 2.0, 5)
    for i, k in enumerate(rates):
        single = solve(k)
        np.testing.assert_allclose(batched.ys[i], single.ys, rtol=1e-12, atol=1e-12)
        exact = np.exp(-float(k) * ts)[:, None] * np.array([1.0, 2.0])
        np.testing.assert_allclose(batched.ys[i], exact, rtol=1e-8)


def test_vmap_with_failing_lane():
    """`throw=False` under vmap: one lane reaching max_steps does not affect the
    others, and reports its own result."""

    def solve(y0):
        return jd.diffeqsolve(
            jd.ODETerm(lorenz),
            jd.Tsit5(),
            0.0,
            1.0,
            None,
            y0,
            saveat=jd.SaveAt(t1=True),
            stepsize_controller=jd.PIDController(rtol=1e-8, atol=1e-8),
            max_steps=130,
            throw=False,
        )

    # Lanes 0, 1 need ~120 steps; lane 2, started far away, needs many more.
    y0s = jnp.array([[1.0, 1.0, 1.0], [2.0, -1.0, 20.0], [50.0, -50.0, 100.0]])
    batched = jax.vmap(solve)(y0s)
    expected = [jd.RESULTS.successful] * 2 + [jd.RESULTS.max_steps_reached]
    for i, result in enumerate(expected):
        assert lane_result(batched, i) == result
        single = solve(y0s[i])
        assert single.result == result
        if result == jd.RESULTS.successful:
            np.testing.assert_allclose(batched.ys[i], single.ys, rtol=1e-10)
        else:
            # Saved at t1 is the state as far as the lane got (rounding moves the
            # adaptive steps slightly, see test_vmap_y0_equals_loop_steps_pid).
            assert float(batched.ts[i][0]) < 1.0
            np.testing.assert_allclose(batched.ts[i], single.ts, rtol=1e-8)
            np.testing.assert_allclose(batched.ys[i], single.ys, rtol=1e-6)


# ---------------------------------------------------------------- jvp


def central_difference(f, x, v, eps):
    return (f(x + eps * v) - f(x - eps * v)) / (2 * eps)


@pytest.mark.parametrize("wrt", ["y0", "args"])
def test_jvp_constant_steps_matches_finite_differences(wrt):
    """With fixed steps the solve is a smooth function of y0 and args: `jax.jvp`
    must match central differences to their own accuracy."""
    y0 = jnp.array([1.0, 1.0, 1.0])

    @eqx.filter_jit
    def f(y0, args):
        return solve_lorenz(
            y0, args, jd.ConstantStepSize(), dt0=0.01, adjoint=jd.ForwardMode()
        ).ys

    if wrt == "y0":
        x, v = y0, jnp.array([1.0, -0.5, 0.3])
        g = lambda x: f(x, LORENZ_ARGS)  # noqa: E731
    else:
        x, v = LORENZ_ARGS, jnp.array([0.1, -0.3, 0.2])
        g = lambda x: f(y0, x)  # noqa: E731
    _, tangent = jax.jvp(g, (x,), (v,))
    fd = central_difference(g, x, v, 1e-5)
    scale = np.max(np.abs(np.asarray(tangent)))
    assert scale > 0.1
    np.testing.assert_allclose(tangent, fd, rtol=0, atol=1e-8 * scale)


def test_jvp_adaptive_matches_finite_differences_and_exact():
    """With PIDController the accepted steps are frozen for differentiation; the
    derivative of y(t) = y0 exp(-k t) is still accurate to about the tolerance,
    and agrees with central differences (whose steps move) as closely."""

    @eqx.filter_jit
    def f(y0, k):
        return jd.diffeqsolve(
            jd.ODETerm(lambda t, y, args: -args * y * (1 + 0.5 * jnp.sin(t))),
            jd.Tsit5(),
            0.0,
            2.0,
            None,
            y0,
            k,
            saveat=jd.SaveAt(ts=jnp.linspace(0.0, 2.0, 5)),
            stepsize_controller=jd.PIDController(rtol=1e-10, atol=1e-10),
            adjoint=jd.ForwardMode(),
        ).ys

    y0, k = jnp.array([1.0, -2.0]), jnp.asarray(0.7)
    ts = np.linspace(0.0, 2.0, 5)
    integral = ts + 0.5 * (1 - np.cos(ts))  # of 1 + 0.5 sin t
    exact = np.exp(-0.7 * integral)[:, None] * np.asarray(y0)

    _, d_y0 = jax.jvp(lambda y: f(y, k), (y0,), (jnp.array([1.0, 0.0]),))
    np.testing.assert_allclose(d_y0[:, 0], exact[:, 0] / 1.0, rtol=1e-8)
    np.testing.assert_allclose(d_y0[:, 1], 0.0, atol=1e-14)

    _, d_k = jax.jvp(lambda a: f(y0, a), (k,), (jnp.asarray(1.0),))
    np.testing.assert_allclose(d_k, -integral[:, None] * exact, rtol=1e-7, atol=1e-9)
    fd = central_difference(lambda a: f(y0, a), k, 1.0, 1e-5)
    np.testing.assert_allclose(d_k, fd, rtol=1e-6, atol=1e-8)


def _cos_solve(t0, t1, ts=None):
    """y' = y cos t from the exact state at t0; y(t) = exp(sin t) y_ref."""
    y_ref = jnp.array([1.0, -0.5])
    return jd.diffeqsolve(
        jd.ODETerm(lambda t, y, args: y * jnp.cos(t)),
        jd.Tsit5(),
        t0,
        t1,
        None,
        jnp.exp(jnp.sin(t0)) * y_ref,
        saveat=jd.SaveAt(t1=True) if ts is None else jd.SaveAt(ts=ts),
        stepsize_controller=jd.PIDController(rtol=1e-10, atol=1e-10),
        adjoint=jd.ForwardMode(),
    )


def _cos_derivative(t):
    return np.cos(t) * np.exp(np.sin(t)) * np.array([1.0, -0.5])


def test_jvp_wrt_t1():
    """d y(t1) / d t1 = f(t1, y(t1))."""
    _, tangent = jax.jvp(lambda t1: _cos_solve(0.0, t1).ys[0], (1.3,), (1.0,))
    np.testing.assert_allclose(tangent, _cos_derivative(1.3), rtol=1e-7)


def test_jvp_wrt_t0_and_ts():
    """Starting on the exact trajectory, y(t1) does not depend on t0; an output at
    time s moves with d y(s) / d s = f(s, y(s))."""
    _, tangent = jax.jvp(lambda t0: _cos_solve(t0, 2.0).ys[0], (0.4,), (1.0,))
    np.testing.assert_allclose(tangent, 0.0, atol=1e-9)
    _, tangent = jax.jvp(
        lambda s: _cos_solve(0.0, 2.0, ts=jnp.stack([jnp.asarray(0.5), s])).ys[1],
        (1.3,),
        (1.0,),
    )
    np.testing.assert_allclose(tangent, _cos_derivative(1.3), rtol=1e-6)


def test_vmap_over_t1_and_ts():
    """Lanes with different intervals, directions included, and different ts."""
    exact = lambda t: (
        np.exp(np.sin(np.asarray(t)))[..., None]
        * np.array(  # noqa: E731
            [1.0, -0.5]
        )
    )
    t1s = jnp.array([0.5, 2.0, -1.0])
    sol = jax.vmap(lambda t1: _cos_solve(0.0, t1))(t1s)
    np.testing.assert_allclose(sol.ys[:, 0], exact(t1s), rtol=1e-8)
    tss = jnp.array([[0.5, 1.0], [0.1, 1.9]])
    sol = jax.vmap(lambda ts: _cos_solve(0.0, 2.0, ts=ts))(tss)
    np.testing.assert_allclose(sol.ys, exact(tss), rtol=1e-8)


def test_vmap_of_jvp():
    """`vmap(jvp(solve))` equals the loop of jvps."""

    @eqx.filter_jit
    def f(y0):
        return solve_lorenz(y0, LORENZ_ARGS, PID, adjoint=jd.ForwardMode()).ys

    v = jnp.array([0.3, 0.2, -0.1])
    jvp = lambda y0: jax.jvp(f, (y0,), (v,))  # noqa: E731
    batched_out, batched_tangent = jax.vmap(jvp)(Y0S)
    for i, y0 in enumerate(Y0S):
        out, tangent = jvp(y0)
        np.testing.assert_allclose(batched_out[i], out, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(batched_tangent[i], tangent, rtol=1e-7, atol=1e-7)


# ---------------------------------------------------------------- unvmap_dt


@functools.cache
def unvmapped():
    controller = jd.PIDController(rtol=1e-8, atol=1e-8, unvmap_dt=True)
    solve = eqx.filter_jit(
        lambda y0: solve_lorenz(y0, LORENZ_ARGS, controller, steps=True)
    )
    return jax.vmap(solve)(Y0S)


def test_unvmap_dt_shares_steps():
    sol = unvmapped()
    for name in ("num_steps", "num_accepted_steps", "num_rejected_steps"):
        counts = np.asarray(sol.stats[name])
        assert np.all(counts == counts[0]), (name, counts)
    # The steps rows: all but those of t0 and ts (the last step is t1's).
    keep = np.ones(sol.ts.shape[1], bool)
    keep[output_rows(sol.ts[0], TS)[:-1]] = False
    step_ts = np.asarray(sol.ts)[:, keep]
    assert np.isfinite(step_ts[0]).sum() == int(sol.stats["num_accepted_steps"][0])
    for lane in step_ts[1:]:
        np.testing.assert_array_equal(lane, step_ts[0])
    # The shared steps are at least as fine as the finest lane needs.
    batched, _ = batched_and_looped("pid")
    assert int(sol.stats["num_accepted_steps"][0]) >= int(
        np.max(batched.stats["num_accepted_steps"])
    )


def test_unvmap_dt_is_accurate():
    """Every lane is as accurate as its own solve at the same tolerance."""
    sol = unvmapped()
    for i, y0 in enumerate(Y0S):
        reference = solve_lorenz(
            y0, LORENZ_ARGS, jd.PIDController(rtol=1e-12, atol=1e-12), max_steps=4096
        )
        rows = output_rows(sol.ts[i], TS)
        reference_rows = output_rows(reference.ts, TS)
        np.testing.assert_allclose(
            sol.ys[i][rows], reference.ys[reference_rows], rtol=1e-6, atol=1e-6
        )


def test_unvmap_dt_different_t1():
    """Lanes that finish early stop without holding the others back."""
    controller = jd.PIDController(rtol=1e-10, atol=1e-10, unvmap_dt=True)

    def solve(t1):
        return jd.diffeqsolve(
            jd.ODETerm(lambda t, y, args: y * jnp.cos(t)),
            jd.Tsit5(),
            0.0,
            t1,
            None,
            jnp.array([1.0, -0.5]),
            saveat=jd.SaveAt(t1=True),
            stepsize_controller=controller,
        )

    t1s = jnp.array([0.5, 2.0, 6.0])
    sol = jax.vmap(solve)(t1s)
    assert np.all(np.asarray(sol.result.value) == 0)
    exact = np.exp(np.sin(np.asarray(t1s)))[:, None] * np.array([1.0, -0.5])
    np.testing.assert_allclose(sol.ys[:, 0], exact, rtol=1e-8)
    np.testing.assert_allclose(sol.ts[:, 0], t1s, rtol=1e-15)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_default_norm_of_small_and_large_leaves(dtype):
    """The controller's default norm (small leaves are summed as adds, large ones
    by a reduction) is the root mean square over every element, alone and under
    `vmap`."""
    norm = jd.PIDController(rtol=1e-3, atol=1e-6).norm
    key = jax.random.PRNGKey(0)
    tree = {
        "one": jax.random.normal(key, (4, 1), dtype),
        "pair": jax.random.normal(jax.random.fold_in(key, 1), (4, 2), dtype),
        "small": jax.random.normal(jax.random.fold_in(key, 2), (4, 2, 4), dtype),
        "large": jax.random.normal(jax.random.fold_in(key, 3), (4, 9), dtype),
    }
    flat = np.concatenate(
        [np.asarray(x, np.float64).reshape(4, -1) for x in jax.tree.leaves(tree)], 1
    )
    expected = np.sqrt(np.mean(flat**2, axis=1))
    rtol = 1e-6 if dtype == jnp.float32 else 1e-14
    batched = jax.vmap(norm)(tree)
    np.testing.assert_allclose(batched, expected, rtol=rtol)
    alone = [norm(jax.tree.map(lambda x, i=i: x[i], tree)) for i in range(4)]
    np.testing.assert_allclose(np.stack(alone), expected, rtol=rtol)
