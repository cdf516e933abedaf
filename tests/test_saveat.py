"""What a solve saves (`SaveAt`), dense output, time direction, state PyTrees and
dtypes, and compilation caching. Values are checked against exact solutions."""

import functools
import logging

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    SOLVER_IDS,
    SOLVERS,
    cos_exact,
    cos_vector_field,
    fitted_order,
)

import jaxdiffeq as jd

TERM = jd.ODETerm(cos_vector_field)
Y0 = jnp.array([1.0, -0.5])


def exact(t):
    return cos_exact(t, Y0)


def exact_derivative(t):
    t = np.asarray(t, dtype=np.float64)
    return (np.cos(t) * np.exp(np.sin(t)))[..., None] * np.asarray(Y0)


@eqx.filter_jit
def evaluate_dense(sol, ts):
    """`sol.evaluate` and `sol.derivative` at every time in `ts` (compiled)."""
    return jax.vmap(sol.evaluate)(ts), jax.vmap(sol.derivative)(ts)


def pid(tol=1e-8):
    return jd.PIDController(rtol=tol, atol=tol)


def finite_rows(ts):
    return np.isfinite(np.asarray(ts))


# ---------------------------------------------------------------- t0/t1/ts/steps


def test_output_order_and_padding():
    """Diffrax's order: t0, then each step's `ts` before the step itself, then t1
    unless the last step was saved already; unfilled rows are inf in ts and ys,
    and there are `max_steps // steps` step rows."""
    ts = jnp.array([0.1, 0.6])
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0.0,
        1.0,
        0.25,
        Y0,
        saveat=jd.SaveAt(t0=True, ts=ts, steps=True, t1=True),
        max_steps=6,
    )
    inf = np.inf
    expected_ts = [0.0, 0.1, 0.25, 0.5, 0.6, 0.75, 1.0, inf, inf]
    np.testing.assert_array_equal(np.asarray(sol.ts), expected_ts)
    assert sol.ys.shape == (9, 2)
    filled = finite_rows(sol.ts)
    assert np.all(np.isinf(np.asarray(sol.ys)[~filled]))
    np.testing.assert_allclose(
        np.asarray(sol.ys)[filled], exact(np.asarray(sol.ts)[filled]), atol=2e-5
    )
    np.testing.assert_array_equal(sol.ys[0], Y0)  # t0 is y0 exactly
    assert int(sol.stats["num_accepted_steps"]) == 4


@pytest.mark.parametrize(
    "saveat_kwargs, max_steps",
    [
        (dict(steps=True, t1=True), 16),
        (dict(steps=2, t1=True), 16),  # the last step (10) is saved: t1 once
        (dict(steps=3, t1=True), 16),  # it is not: a t1 row after the steps
        (dict(steps=3, t1=True), 15),  # max_steps a multiple: no spare t1 row
        (dict(steps=True, ts=jnp.linspace(0.0, 1.0, 7)), 16),  # interleaved
        (dict(steps=3, t0=True, t1=True, ts=jnp.linspace(0.0, 1.0, 7)), 16),
        (dict(steps=True, t1=True), 5),  # max_steps reached
    ],
)
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_output_layout_equals_diffrax(saveat_kwargs, max_steps, backward):
    """The same number of rows, times and values as Diffrax 0.7.2, for every
    combination of `steps` with `t0`, `ts` and `t1`, forwards and backwards."""
    t0, t1, dt0 = (1.0, 0.0, -0.1) if backward else (0.0, 1.0, 0.1)
    if backward and "ts" in saveat_kwargs:
        saveat_kwargs = dict(saveat_kwargs, ts=saveat_kwargs["ts"][::-1])

    def solve(lib):
        return lib.diffeqsolve(
            lib.ODETerm(lambda t, y, args: -y),
            lib.Tsit5(),
            t0,
            t1,
            dt0,
            Y0,
            saveat=lib.SaveAt(**saveat_kwargs),
            max_steps=max_steps,
            throw=False,
        )

    ours, theirs = solve(jd), solve(diffrax)
    assert ours.ts.shape == theirs.ts.shape and ours.ys.shape == theirs.ys.shape
    np.testing.assert_allclose(ours.ts, theirs.ts, rtol=1e-14)
    np.testing.assert_allclose(ours.ys, theirs.ys, rtol=1e-12)


@pytest.mark.parametrize(
    "solver", [jd.Bosh3(), jd.Tsit5(), jd.Dopri5(), jd.Dopri8()], ids=str
)
def test_ts_equal_dense_and_exact(solver):
    """`SaveAt(ts)` outputs are the dense interpolant at those times, and accurate."""
    ts = jnp.array([0.0, 0.13, 0.5, 1.7, 2.0, 2.9, 3.0])
    sol = jd.diffeqsolve(
        TERM,
        solver,
        0.0,
        3.0,
        None,
        Y0,
        saveat=jd.SaveAt(ts=ts, dense=True),
        stepsize_controller=pid(1e-8),
    )
    np.testing.assert_array_equal(np.asarray(sol.ts), np.asarray(ts))
    dense, _ = evaluate_dense(sol, ts)
    np.testing.assert_allclose(sol.ys, dense, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(sol.ys, exact(ts), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sol.ys[0], Y0)


def test_ts_at_t1_is_the_final_state():
    """An output at t1 is the state at the end of the last step, bit for bit."""
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0.0,
        2.0,
        None,
        Y0,
        saveat=jd.SaveAt(ts=jnp.array([1.0, 2.0]), t1=True),
        stepsize_controller=pid(),
    )
    np.testing.assert_array_equal(sol.ys[1], sol.ys[2])
    np.testing.assert_allclose(sol.ys[2], exact(2.0), atol=1e-7)


def test_repeated_ts():
    ts = jnp.array([0.5, 0.5, 1.0, 1.0])
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0.0,
        1.0,
        0.1,
        Y0,
        saveat=jd.SaveAt(ts=ts),
    )
    np.testing.assert_array_equal(np.asarray(sol.ts), np.asarray(ts))
    np.testing.assert_allclose(sol.ys, exact(ts), atol=1e-7)


@pytest.mark.parametrize(
    "controller, dt0",
    [(jd.ConstantStepSize(), 0.1), (pid(), None)],
    ids=["constant", "pid"],
)
def test_many_ts_per_step(controller, dt0):
    """Many more outputs than steps, and than `max_steps`: all of them written."""
    ts = jnp.linspace(0.0, 1.0, 1000)
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0.0,
        1.0,
        dt0,
        Y0,
        saveat=jd.SaveAt(ts=ts),
        stepsize_controller=controller,
        max_steps=16,
    )
    assert sol.result == jd.RESULTS.successful
    assert int(sol.stats["num_steps"]) <= 16
    np.testing.assert_array_equal(np.asarray(sol.ts), np.asarray(ts))
    np.testing.assert_allclose(sol.ys, exact(ts), atol=1e-6)


def test_steps_every_n():
    """`steps=n` saves after every n-th accepted step, in `max_steps // n` rows."""
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0.0,
        1.0,
        0.1,
        Y0,
        saveat=jd.SaveAt(steps=3),
        max_steps=16,
    )
    assert sol.ts.shape == (16 // 3,)
    np.testing.assert_allclose(
        np.asarray(sol.ts), [0.3, 0.6, 0.9, np.inf, np.inf], rtol=1e-14
    )
    filled = finite_rows(sol.ts)
    np.testing.assert_allclose(
        np.asarray(sol.ys)[filled], exact(np.asarray(sol.ts)[filled]), atol=1e-8
    )
    assert np.all(np.isinf(np.asarray(sol.ys)[~filled]))


def test_steps_adaptive():
    """With adaptive steps, the step outputs are the solution at the step ends."""
    sol = jd.diffeqsolve(
        TERM,
        jd.Dopri5(),
        0.0,
        5.0,
        None,
        Y0,
        saveat=jd.SaveAt(steps=True),
        stepsize_controller=pid(1e-9),
        max_steps=500,
    )
    filled = finite_rows(sol.ts)
    n = int(sol.stats["num_accepted_steps"])
    assert filled.sum() == n and np.all(filled[:n])
    ts = np.asarray(sol.ts)[:n]
    assert np.all(np.diff(ts) > 0) and ts[-1] == 5.0
    np.testing.assert_allclose(np.asarray(sol.ys)[:n], exact(ts), atol=1e-7)


def test_fn():
    """`fn(t, y, args)` is saved instead of y; it may change the structure."""

    def fn(t, y, args):
        return {"energy": jnp.sum(y**2) * args, "t": t}

    ts = jnp.linspace(0.0, 2.0, 5)
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0.0,
        2.0,
        None,
        Y0,
        args=jnp.asarray(3.0),
        saveat=jd.SaveAt(t0=True, ts=ts, t1=True, fn=fn),
        stepsize_controller=pid(),
    )
    times = np.concatenate([[0.0], np.asarray(ts), [2.0]])
    assert sol.ys["energy"].shape == (7,)
    np.testing.assert_allclose(sol.ys["t"], times)
    np.testing.assert_allclose(
        sol.ys["energy"], 3 * np.sum(exact(times) ** 2, axis=-1), rtol=1e-7
    )


def test_subs():
    """A PyTree of `SubSaveAt` gives outputs of the same structure."""
    ts = jnp.array([0.5, 1.5])
    saveat = jd.SaveAt(
        subs={
            "at_ts": jd.SubSaveAt(ts=ts),
            "norm": jd.SubSaveAt(
                t0=True, steps=True, t1=True, fn=lambda t, y, args: jnp.sum(y**2)
            ),
            "ends": (jd.SubSaveAt(t0=True), jd.SubSaveAt(t1=True)),
        }
    )
    sol = jd.diffeqsolve(
        TERM, jd.Tsit5(), 0.0, 2.0, 0.25, Y0, saveat=saveat, max_steps=10
    )
    assert set(sol.ys) == {"at_ts", "norm", "ends"}
    np.testing.assert_array_equal(np.asarray(sol.ts["at_ts"]), np.asarray(ts))
    np.testing.assert_allclose(sol.ys["at_ts"], exact(ts), atol=1e-6)
    norm_ts = np.asarray(sol.ts["norm"])
    # t0 and 10 step rows: the last step (8, at t1) is the t1 output.
    assert norm_ts.shape == (1 + 10,)
    np.testing.assert_allclose(
        norm_ts[:9], np.concatenate([[0.0], np.arange(1, 9) * 0.25]), rtol=1e-14
    )
    assert np.all(np.isinf(norm_ts[9:])) and norm_ts[8] == 2.0
    filled = np.isfinite(norm_ts)
    np.testing.assert_allclose(
        np.asarray(sol.ys["norm"])[filled],
        np.sum(exact(norm_ts[filled]) ** 2, axis=-1),
        rtol=1e-6,
    )
    start, end = sol.ys["ends"]
    np.testing.assert_array_equal(start, Y0[None])
    np.testing.assert_allclose(end, exact(jnp.array([2.0])), atol=1e-6)


def test_dense_only():
    """`SaveAt(dense=True)` alone: no ts/ys, a working interpolant."""
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0.0,
        2.0,
        None,
        Y0,
        saveat=jd.SaveAt(dense=True),
        stepsize_controller=pid(),
    )
    assert sol.ts is None and sol.ys is None
    np.testing.assert_allclose(sol.evaluate(1.3), exact(1.3), atol=1e-6)


def test_evaluate_increment():
    """`evaluate(t0, t1)` is the increment y(t1) - y(t0)."""
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0.0,
        2.0,
        None,
        Y0,
        saveat=jd.SaveAt(t1=True, dense=True),
        stepsize_controller=pid(),
    )
    np.testing.assert_allclose(
        sol.evaluate(0.3, 1.9), exact(1.9) - exact(0.3), atol=1e-7
    )


# ---------------------------------------------------------------- StepTo


@pytest.mark.parametrize("direction", [1, -1])
def test_step_to_hits_times_exactly(direction):
    times = direction * np.array([0.0, 0.1, 0.3, 0.35, 0.7, 1.0 / 3.0 + 0.7, 1.3])
    times = jnp.asarray(times)
    sol = jd.diffeqsolve(
        TERM,
        jd.Bosh3(),
        0.0,
        times[-1],
        None,
        Y0,
        saveat=jd.SaveAt(steps=True),
        stepsize_controller=jd.StepTo(times),
        max_steps=len(times) - 1,
    )
    np.testing.assert_array_equal(np.asarray(sol.ts), np.asarray(times[1:]))
    np.testing.assert_allclose(sol.ys, exact(times[1:]), atol=1e-3)
    assert int(sol.stats["num_steps"]) == len(times) - 1


# ---------------------------------------------------------------- dense output


DENSE_NUM_STEPS = {
    1: [64, 128, 256, 512],
    2: [32, 64, 128, 256],
    3: [16, 32, 64, 128],
    5: [16, 32, 64, 128],
    8: [16, 24, 32, 48],
}
# Dopri8's derivative reaches its asymptotic order only at smaller steps, where its
# values are already near rounding.
DERIVATIVE_NUM_STEPS = dict(DENSE_NUM_STEPS)
DERIVATIVE_NUM_STEPS[8] = [32, 48, 64, 96]
DENSE_T1 = 4.0
# Fixed evaluation times, none of them a step end: every step of every solve below
# holds at least four of them, at varying fractions of the step.
DENSE_TS = jnp.asarray(DENSE_T1 * (np.arange(2048) + 0.37) / 2048)


@functools.cache
def dense_errors(name, num_steps):
    """Max errors of `evaluate` and `derivative` over `DENSE_TS` for a solve with
    `num_steps` constant steps (cached: the value and derivative tests share it)."""
    solver = {case.name: case.solver for case in SOLVERS}[name]
    dt = DENSE_T1 / num_steps
    sol = jd.diffeqsolve(
        TERM,
        solver,
        0.0,
        DENSE_T1,
        dt,
        Y0,
        saveat=jd.SaveAt(t1=True, dense=True),
        max_steps=520,
    )
    values, derivatives = evaluate_dense(sol, DENSE_TS)
    value_error = np.max(np.abs(np.asarray(values) - exact(DENSE_TS)))
    derivative_error = np.max(
        np.abs(np.asarray(derivatives) - exact_derivative(DENSE_TS))
    )
    return dt, value_error, derivative_error


@pytest.mark.parametrize("case", SOLVERS, ids=SOLVER_IDS)
def test_dense_evaluate_order(case):
    data = [dense_errors(case.name, n) for n in DENSE_NUM_STEPS[case.order]]
    dts, errors, _ = zip(*data)
    assert min(errors) > 1e-13, errors
    slope = fitted_order(dts, errors)
    assert abs(slope - case.dense_order) <= 0.3, (slope, errors)


@pytest.mark.parametrize("case", SOLVERS, ids=SOLVER_IDS)
def test_dense_derivative_order(case):
    data = [dense_errors(case.name, n) for n in DERIVATIVE_NUM_STEPS[case.order]]
    dts, _, errors = zip(*data)
    slope = fitted_order(dts, errors)
    assert abs(slope - case.derivative_order) <= 0.3, (slope, errors)


@pytest.mark.parametrize("case", SOLVERS, ids=SOLVER_IDS)
def test_dense_is_continuous_and_exact_at_step_ends(case):
    """At every step end the interpolant equals the saved step value (it is
    continuous across steps), and `ts` outputs at step ends agree with it."""
    sol = jd.diffeqsolve(
        TERM,
        case.solver,
        0.0,
        2.0,
        0.25,
        Y0,
        saveat=jd.SaveAt(steps=True, dense=True),
        max_steps=8,
    )
    ts = sol.ts
    left, right = evaluate_both_sides(sol, ts)
    right = right[:-1]
    np.testing.assert_allclose(left, sol.ys, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(right, sol.ys[:-1], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(sol.evaluate(0.0), Y0, rtol=1e-15)


@eqx.filter_jit
def evaluate_both_sides(sol, ts):
    return (
        jax.vmap(lambda t: sol.evaluate(t, left=True))(ts),
        jax.vmap(lambda t: sol.evaluate(t, left=False))(ts),
    )


# ---------------------------------------------------------------- time direction


@pytest.mark.parametrize(
    "controller, dt0",
    [(jd.ConstantStepSize(), 0.1), (pid(1e-8), None)],
    ids=["constant", "pid"],
)
def test_backward_in_time_mirrors_forward(controller, dt0):
    """Solving y' = f(t, y) from 0 back to -2 is solving z' = -f(-s, z) from 0 to
    2, with s = -t: same steps, same values, mirrored times."""
    ts = jnp.array([0.0, -0.3, -1.1, -1.75, -2.0])
    saveat_kwargs = dict(t0=True, steps=True, t1=True, dense=True)

    def mirrored(s, z, args):
        return -cos_vector_field(-s, z, args)

    backward = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0.0,
        -2.0,
        None if dt0 is None else -dt0,
        Y0,
        saveat=jd.SaveAt(ts=ts, **saveat_kwargs),
        stepsize_controller=controller,
        max_steps=64,
    )
    forward = jd.diffeqsolve(
        jd.ODETerm(mirrored),
        jd.Tsit5(),
        0.0,
        2.0,
        dt0,
        Y0,
        saveat=jd.SaveAt(ts=-ts, **saveat_kwargs),
        stepsize_controller=controller,
        max_steps=64,
    )
    assert backward.result == jd.RESULTS.successful
    for name in ("num_steps", "num_accepted_steps", "num_rejected_steps"):
        assert int(backward.stats[name]) == int(forward.stats[name])
    # Unfilled `steps` rows are +inf in both.
    filled = np.isfinite(np.asarray(forward.ts))
    np.testing.assert_array_equal(np.isfinite(np.asarray(backward.ts)), filled)
    assert np.all(np.asarray(backward.ts)[~filled] == np.inf)
    np.testing.assert_allclose(
        np.asarray(backward.ts)[filled],
        -np.asarray(forward.ts)[filled],
        rtol=1e-14,
        atol=0,
    )
    np.testing.assert_allclose(backward.ys, forward.ys, rtol=1e-13, atol=1e-14)
    # ts outputs (interleaved with the steps) are accurate and descending.
    at_ts = np.isin(np.asarray(backward.ts), np.asarray(ts))
    np.testing.assert_array_equal(
        np.unique(np.asarray(backward.ts)[at_ts]), np.sort(ts)
    )
    np.testing.assert_allclose(
        np.asarray(backward.ys)[at_ts], exact(np.asarray(backward.ts)[at_ts]), atol=1e-6
    )
    assert np.all(np.diff(np.asarray(backward.ts)[np.isfinite(backward.ts)]) <= 0)
    # Dense output at negative times, and its derivative (d/dt, not d/ds).
    for t in (-0.05, -0.77, -1.999):
        np.testing.assert_allclose(
            backward.evaluate(t), forward.evaluate(-t), rtol=1e-13, atol=1e-14
        )
        np.testing.assert_allclose(backward.evaluate(t), exact(t), atol=1e-6)
        np.testing.assert_allclose(
            backward.derivative(t), -forward.derivative(-t), rtol=1e-12, atol=1e-13
        )
        np.testing.assert_allclose(
            backward.derivative(t), exact_derivative(t), atol=1e-4
        )


@pytest.mark.parametrize(
    "controller, dt0",
    [(jd.ConstantStepSize(), 0.1), (pid(), None)],
    ids=["constant", "pid"],
)
def test_zero_length_interval(controller, dt0):
    """t0 == t1: no steps, y0 at every saved time, steps rows inf."""
    t = 1.5
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        t,
        t,
        dt0,
        Y0,
        saveat=jd.SaveAt(t0=True, ts=jnp.array([t, t]), steps=True, t1=True),
        stepsize_controller=controller,
        max_steps=4,
    )
    assert sol.result == jd.RESULTS.successful
    assert int(sol.stats["num_steps"]) == 0
    ts = np.asarray(sol.ts)
    ys = np.asarray(sol.ys)
    # No step: no steps rows, and (as in Diffrax, where `steps=True` stands for
    # the t1 row) no t1 row either.
    saved = np.array([True, True, True, False, False, False, False])
    np.testing.assert_array_equal(ts[saved], t)
    np.testing.assert_array_equal(ys[saved], np.broadcast_to(Y0, (3, 2)))
    assert np.all(np.isinf(ts[~saved])) and np.all(np.isinf(ys[~saved]))


def test_zero_length_interval_dense():
    """t0 == t1 with dense output: the interpolant is y0."""
    t = 1.5
    sol = jd.diffeqsolve(
        TERM, jd.Tsit5(), t, t, 0.1, Y0, saveat=jd.SaveAt(t1=True, dense=True)
    )
    np.testing.assert_array_equal(sol.ys[0], Y0)
    np.testing.assert_array_equal(sol.evaluate(t), Y0)


# ---------------------------------------------------------------- states and dtypes


def test_pytree_state():
    """A dict/tuple state with leaves of different shapes; each leaf decays at its
    own rates, y(t) = y0 exp(-k t)."""
    y0 = {
        "a": jnp.arange(1.0, 7.0).reshape(2, 3),
        "b": (jnp.asarray(2.0), jnp.linspace(-1.0, 1.0, 4)),
    }
    rates = {
        "a": jnp.array([[0.1, 0.2, 0.3]]) * jnp.ones((2, 1)),
        "b": (jnp.asarray(1.0), jnp.linspace(0.5, 1.5, 4)),
    }

    def vector_field(t, y, args):
        return jax.tree.map(lambda k, x: -k * x, args, y)

    ts = jnp.linspace(0.0, 2.0, 5)
    sol = jd.diffeqsolve(
        jd.ODETerm(vector_field),
        jd.Tsit5(),
        0.0,
        2.0,
        None,
        y0,
        rates,
        saveat=jd.SaveAt(ts=ts, steps=True, dense=True),
        stepsize_controller=pid(1e-9),
        max_steps=100,
    )

    def exact_at(t, y0_leaf, k):
        t = np.asarray(t)
        return np.asarray(y0_leaf) * np.exp(
            -np.asarray(k) * t.reshape(t.shape + (1,) * np.ndim(y0_leaf))
        )

    assert jax.tree.structure(sol.ys) == jax.tree.structure(y0)
    n = len(ts)
    ts_np = np.asarray(sol.ts)
    filled = np.isfinite(ts_np)
    for leaf, y0_leaf, k in zip(
        jax.tree.leaves(sol.ys), jax.tree.leaves(y0), jax.tree.leaves(rates)
    ):
        assert leaf.shape == (n + 100, *y0_leaf.shape)
        assert leaf.dtype == y0_leaf.dtype
        np.testing.assert_allclose(
            np.asarray(leaf)[filled], exact_at(ts_np[filled], y0_leaf, k), atol=1e-8
        )
        assert np.all(np.isinf(np.asarray(leaf)[~filled]))
    evaluated = sol.evaluate(1.23)
    for leaf, y0_leaf, k in zip(
        jax.tree.leaves(evaluated), jax.tree.leaves(y0), jax.tree.leaves(rates)
    ):
        assert leaf.shape == y0_leaf.shape
        np.testing.assert_allclose(leaf, exact_at(1.23, y0_leaf, k), atol=1e-8)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("time_dtype", [jnp.float32, jnp.float64])
def test_dtypes(dtype, time_dtype):
    """Outputs keep the state's dtype; times take the dtype of t0/t1/ts; the
    accuracy is what the precision allows."""
    y0 = Y0.astype(dtype)
    ts = jnp.linspace(0.0, 2.0, 5, dtype=time_dtype)

    def vector_field(t, y, args):
        # Keep the state's dtype (a float64 time would promote a float32 state).
        return y * jnp.cos(t).astype(y.dtype)

    tol = 1e-5 if jnp.float32 in (dtype, time_dtype) else 1e-10
    sol = jd.diffeqsolve(
        jd.ODETerm(vector_field),
        jd.Tsit5(),
        time_dtype(0.0),
        time_dtype(2.0),
        None,
        y0,
        saveat=jd.SaveAt(ts=ts, dense=True),
        stepsize_controller=pid(tol),
    )
    assert sol.ys.dtype == dtype
    assert sol.ts.dtype == time_dtype
    assert sol.evaluate(time_dtype(0.7)).dtype == dtype
    assert sol.derivative(time_dtype(0.7)).dtype == dtype
    np.testing.assert_allclose(sol.ys, exact(ts), rtol=100 * tol, atol=100 * tol)


def test_mixed_dtype_state():
    y0 = {"single": Y0.astype(jnp.float32), "double": Y0}
    sol = jd.diffeqsolve(
        jd.ODETerm(
            lambda t, y, args: jax.tree.map(lambda x: x * jnp.cos(t).astype(x.dtype), y)
        ),
        jd.Tsit5(),
        0.0,
        2.0,
        None,
        y0,
        saveat=jd.SaveAt(t1=True),
        stepsize_controller=pid(1e-6),
    )
    assert sol.ys["single"].dtype == jnp.float32
    assert sol.ys["double"].dtype == jnp.float64
    np.testing.assert_allclose(sol.ys["single"][0], exact(2.0), rtol=1e-4)
    np.testing.assert_allclose(sol.ys["double"][0], exact(2.0), rtol=1e-5)


def test_integer_times_promote_to_float():
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0,
        2,
        1,
        Y0,
        saveat=jd.SaveAt(ts=jnp.arange(3), steps=True),
        max_steps=2,
    )
    assert jnp.issubdtype(sol.ts.dtype, jnp.floating)
    np.testing.assert_array_equal(np.asarray(sol.ts), [0.0, 1.0, 1.0, 2.0, 2.0])
    np.testing.assert_allclose(sol.ys[::2], exact(np.arange(3.0)), atol=2e-2)
    sol = jd.diffeqsolve(
        TERM,
        jd.Tsit5(),
        0,
        2,
        None,
        Y0,
        saveat=jd.SaveAt(ts=[0, 1, 2]),
        stepsize_controller=pid(),
    )
    assert jnp.issubdtype(sol.ts.dtype, jnp.floating)
    np.testing.assert_allclose(sol.ys, exact(np.arange(3.0)), atol=1e-6)


# ---------------------------------------------------------------- compilation


class _CompileLog(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def compiles(self):
        return [m for m in self.messages if m.startswith("Compiling")]


def test_new_values_do_not_recompile():
    """A second call with new values of y0, args, t0, t1, dt0 and ts (same shapes)
    reuses the compiled solve."""

    def vector_field(t, y, args):  # a fresh function: nothing cached for it yet
        return -args * y * jnp.cos(t)

    def solve(y0, args, t1, dt0, ts):
        return jd.diffeqsolve(
            jd.ODETerm(vector_field),
            jd.Tsit5(),
            0.0,
            t1,
            dt0,
            y0,
            args,
            saveat=jd.SaveAt(ts=ts),
            stepsize_controller=pid(),
        )

    # The inputs are made before logging starts: computing them compiles small
    # programs of their own (e.g. `2 * Y0`) when no earlier test has.
    first_inputs = (Y0, jnp.asarray(0.5), 1.0, 0.1, jnp.linspace(0.0, 1.0, 4))
    second_inputs = (2 * Y0, jnp.asarray(-0.5), 2.0, 0.2, jnp.linspace(0.5, 2.0, 4))
    jax.block_until_ready((first_inputs, second_inputs))
    log = _CompileLog()
    logger = logging.getLogger("jax")
    logger.addHandler(log)
    try:
        with jax.log_compiles():
            first = solve(*first_inputs)
            jax.block_until_ready(first.ys)
            first_compiles = log.compiles()
            log.messages.clear()
            second = solve(*second_inputs)
            jax.block_until_ready(second.ys)
            second_compiles = log.compiles()
    finally:
        logger.removeHandler(log)
    assert first_compiles  # the detection works
    assert second_compiles == []
    # The second call really used its new values: y = y0 exp(-args sin t).
    ts = np.linspace(0.5, 2.0, 4)
    np.testing.assert_allclose(
        second.ys, np.exp(0.5 * np.sin(ts))[:, None] * np.asarray(2 * Y0), rtol=1e-6
    )


def test_empty_state():
    """A state with no arrays is solved trivially (nothing to integrate)."""
    sol = jd.diffeqsolve(
        jd.ODETerm(lambda t, y, args: y),
        jd.Tsit5(),
        0.0,
        1.0,
        0.25,
        {},
        saveat=jd.SaveAt(ts=jnp.array([0.5, 1.0])),
    )
    assert sol.ys == {}
    np.testing.assert_array_equal(sol.ts, [0.5, 1.0])
    assert int(sol.stats["num_accepted_steps"]) == 4
