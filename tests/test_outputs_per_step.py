"""Outputs per step, from none to many: `SaveAt(ts)` times that skip steps, crowd
into one step, all fall in the last step, repeat, or equal `t0`/`t1`; together
with `subs`, `fn`, `steps` and dense output; under `vmap` with lanes whose steps
differ; and gradients through them with every adjoint. Checked against the
exact solution of y' = -k y (and, under `vmap`, against unbatched solves)."""

import functools

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiffeq as jd

Y0 = jnp.array([1.0, 2.0])
TS_CASES = {
    "crowded-and-sparse": [0.01, 0.02, 0.03, 0.55, 0.99, 0.995, 1.0],
    "all-in-last-step": list(np.linspace(0.91, 1.0, 7)),
    "t0-duplicates-t1": [0.0, 0.0, 0.5, 0.5, 1.0, 1.0],
    "one-per-step": list(np.linspace(0.05, 0.95, 10)),
}


def _decay(t, y, k):
    del t
    return -k * y


def _exact(ts, k=0.5):
    return Y0[None, :] * jnp.exp(-k * jnp.asarray(ts))[:, None]


def _solve(
    saveat,
    k=jnp.asarray(0.5),
    adjoint=jd.RecursiveCheckpointAdjoint(),
    controller=jd.ConstantStepSize(),
):
    return jd.diffeqsolve(
        jd.ODETerm(_decay),
        jd.Tsit5(),
        0.0,
        1.0,
        0.1,
        Y0,
        k,
        saveat=saveat,
        stepsize_controller=controller,
        adjoint=adjoint,
        max_steps=64,
    )


@pytest.mark.parametrize("name", list(TS_CASES))
def test_ts_patterns_with_subs_fn_steps_and_dense(name):
    ts = jnp.asarray(TS_CASES[name])
    saveat = jd.SaveAt(
        subs=[
            jd.SubSaveAt(ts=ts),
            jd.SubSaveAt(ts=ts, fn=lambda t, y, k: jnp.sum(y**2)),
            jd.SubSaveAt(steps=True),
        ],
        dense=True,
    )
    sol = _solve(saveat)
    assert sol.ys is not None and sol.ts is not None
    ys_ts, ys_fn, ys_steps = sol.ys
    exact = _exact(ts)
    np.testing.assert_allclose(ys_ts, exact, rtol=1e-6)
    np.testing.assert_allclose(ys_fn, jnp.sum(exact**2, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(sol.ts[0], ts)
    # Steps of 0.1 end on the grid; the dense output agrees with the saved rows.
    num = int(sol.stats["num_accepted_steps"])
    assert num == 10
    np.testing.assert_allclose(ys_steps[:num], _exact(sol.ts[2][:num]), rtol=1e-6)
    dense = jax.vmap(sol.evaluate)(ts)
    np.testing.assert_allclose(dense, ys_ts, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(TS_CASES))
def test_forward_row_by_row_writes_equal_the_vectorised_writes(name):
    """Undifferentiated, the nested loop writes a small state's outputs one row
    at a time in a `lax.while_loop` (`outputs._loop_due_ts`); `DirectAdjoint`'s
    bounded loop writes them with the vectorised writes. Same rows, adaptive
    steps and `fn` included, alone and under `vmap` (where the nested loop
    takes the vectorised writes too)."""
    ts = jnp.asarray(TS_CASES[name])
    saveat = jd.SaveAt(
        subs=[
            jd.SubSaveAt(ts=ts),
            jd.SubSaveAt(ts=ts[::2], fn=lambda t, y, k: jnp.sum(y**2)),
        ]
    )

    controller = jd.PIDController(rtol=1e-4, atol=1e-6)

    def solve(k, adjoint):
        return _solve(saveat, k, adjoint, controller).ys

    ks = jnp.array([0.5, 3.0, 20.0])
    for k in (ks[0], ks):
        run = solve if k.ndim == 0 else jax.vmap(solve, in_axes=(0, None))
        row_by_row = run(k, jd.RecursiveCheckpointAdjoint())
        vectorised = run(k, jd.DirectAdjoint())
        for a, b in zip(row_by_row, vectorised):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    row_by_row = solve(ks[0], jd.RecursiveCheckpointAdjoint())
    np.testing.assert_allclose(row_by_row[0], _exact(ts), rtol=1e-4)


def test_vmap_lanes_with_different_outputs_per_step():
    """Lanes with different rates take different adaptive steps, so each step
    holds a different number of outputs per lane; the batched outputs equal
    those of the lanes solved one at a time."""
    ts = jnp.asarray(TS_CASES["crowded-and-sparse"] + [0.3, 0.31, 0.7])
    ts = jnp.sort(ts)
    ks = jnp.asarray([0.1, 2.0, 15.0])

    def solve(k):
        sol = jd.diffeqsolve(
            jd.ODETerm(_decay),
            jd.Tsit5(),
            0.0,
            1.0,
            None,
            Y0,
            k,
            saveat=jd.SaveAt(ts=ts, t1=True),
            stepsize_controller=jd.PIDController(rtol=1e-8, atol=1e-10),
        )
        assert sol.ys is not None
        return sol.ys, sol.stats["num_accepted_steps"]

    batched, steps = jax.vmap(solve)(ks)
    assert len(set(np.asarray(steps).tolist())) == 3  # the lanes step differently
    for lane, k in enumerate(ks):
        single, _ = solve(k)
        np.testing.assert_allclose(batched[lane], single, rtol=1e-12, atol=1e-14)
        exact = Y0[None, :] * jnp.exp(-k * jnp.append(ts, 1.0))[:, None]
        np.testing.assert_allclose(single, exact, rtol=1e-6, atol=1e-10)


ADJOINTS = {
    "recursive": jd.RecursiveCheckpointAdjoint(),
    "direct": jd.DirectAdjoint(),
    "backsolve": jd.BacksolveAdjoint(),
    "reversible": jd.ReversibleAdjoint(),
}


@pytest.mark.parametrize("name", ["crowded-and-sparse", "all-in-last-step"])
@pytest.mark.parametrize("adjoint", list(ADJOINTS))
def test_gradients_through_crowded_outputs(name, adjoint):
    """d/dk of sum(y(t_i)^2) against the exact derivative
    -2 t_i sum(y0^2) exp(-2 k t_i), and against central finite differences of
    the same (loose) solve."""
    ts = jnp.asarray(TS_CASES[name])

    def loss(k):
        sol = _solve(jd.SaveAt(ts=ts), k, ADJOINTS[adjoint])
        assert sol.ys is not None
        return jnp.sum(sol.ys**2)

    k = jnp.asarray(0.5)
    grad = jax.grad(loss)(k)
    exact = jnp.sum(-2 * ts * jnp.sum(Y0**2) * jnp.exp(-2 * k * ts))
    np.testing.assert_allclose(grad, exact, rtol=1e-5)
    eps = 1e-5
    finite_difference = (loss(k + eps) - loss(k - eps)) / (2 * eps)
    np.testing.assert_allclose(grad, finite_difference, rtol=1e-6)


@pytest.mark.parametrize("name", ["crowded-and-sparse", "t0-duplicates-t1"])
def test_forward_mode_through_crowded_outputs(name):
    ts = jnp.asarray(TS_CASES[name])

    def outputs(k):
        sol = _solve(jd.SaveAt(ts=ts), k, jd.ForwardMode())
        assert sol.ys is not None
        return sol.ys

    k = jnp.asarray(0.5)
    tangent = jax.jacfwd(outputs)(k)
    exact = -ts[:, None] * _exact(ts, 0.5)
    np.testing.assert_allclose(tangent, exact, rtol=1e-5, atol=1e-12)


# More outputs in one step than one visit of the output writes takes (32 for a
# small state): the loop comes back to the step before stepping on.
OVERFLOW_TS = jnp.linspace(0.9005, 1.0, 80)


@pytest.mark.parametrize("adjoint", ["recursive", "direct", "reversible"])
def test_more_outputs_in_one_step_than_one_visit_writes(adjoint):
    """80 outputs in the last step: every row is written, forward and through
    the gradient (the bounded loop of `DirectAdjoint` must have room for the
    extra visits)."""

    def loss(k):
        sol = _solve(jd.SaveAt(ts=OVERFLOW_TS), k, ADJOINTS[adjoint])
        assert sol.ys is not None
        return jnp.sum(sol.ys**2), sol.ys

    k = jnp.asarray(0.5)
    (_, ys), grad = jax.value_and_grad(loss, has_aux=True)(k)
    np.testing.assert_allclose(ys, _exact(OVERFLOW_TS), rtol=1e-6)
    ts = OVERFLOW_TS
    exact = jnp.sum(-2 * ts * jnp.sum(Y0**2) * jnp.exp(-2 * k * ts))
    np.testing.assert_allclose(grad, exact, rtol=1e-5)


# With traced times the outputs per step are unknown: visits are 32 wide, and a
# visit that finds more due rows widens to all of them (`config.wide_ts_width`).
CROWDED_TS = jnp.concatenate([jnp.linspace(0.05, 0.1, 3), jnp.linspace(0.9, 1.0, 200)])


@pytest.mark.parametrize("adjoint", ["recursive", "direct", "reversible"])
def test_traced_times_with_more_outputs_in_a_step_than_a_visit(adjoint):
    """200 outputs in the last step with `t0`, `t1` traced: every row, forward
    and through the gradient, alone and under `vmap` over `t1` (one lane's last
    step holds them all, the other's holds none)."""

    def solve(k, t1):
        sol = jd.diffeqsolve(
            jd.ODETerm(_decay),
            jd.Tsit5(),
            jnp.zeros_like(t1),
            t1,
            0.1,
            Y0,
            k,
            saveat=jd.SaveAt(ts=CROWDED_TS * t1),
            stepsize_controller=jd.ConstantStepSize(),
            adjoint=ADJOINTS[adjoint],
            max_steps=64,
        )
        assert sol.ys is not None
        return sol.ys

    def loss(k, t1):
        return jnp.sum(solve(k, t1) ** 2)

    k, t1s = jnp.asarray(0.5), jnp.asarray([1.0, 0.05])
    ys = jax.jit(solve)(k, t1s[0])
    np.testing.assert_allclose(ys, _exact(CROWDED_TS), rtol=1e-6)
    grad = jax.jit(jax.grad(loss))(k, t1s[0])
    ts = CROWDED_TS
    exact = jnp.sum(-2 * ts * jnp.sum(Y0**2) * jnp.exp(-2 * k * ts))
    np.testing.assert_allclose(grad, exact, rtol=1e-5)
    lanes = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(k, t1s)
    ts = CROWDED_TS * t1s[1]
    exact_1 = jnp.sum(-2 * ts * jnp.sum(Y0**2) * jnp.exp(-2 * k * ts))
    np.testing.assert_allclose(lanes, jnp.stack([exact, exact_1]), rtol=1e-5)


def test_wide_visit_only_where_the_outputs_per_step_are_unknown():
    from jaxdiffeq._loop.config import wide_ts_width

    assert wide_ts_width(1000, 2, None, 32) == 1000
    assert wide_ts_width(10**5, 2, None, 512) == 1024  # the cap
    assert wide_ts_width(10**5, 5, None, 512) == 819  # the state-size budget
    assert wide_ts_width(1000, 2, 64, 64) == 0  # known: the width fits
    assert wide_ts_width(20, 2, None, 20) == 0  # a visit already takes them all


def test_crowded_outputs_of_a_large_state_one_at_a_time():
    """A state too large for several outputs per visit (written one at a time)
    saves the same rows as a small one."""
    n = 5000
    y0 = jnp.linspace(1.0, 2.0, n)
    ts = jnp.asarray(TS_CASES["crowded-and-sparse"])
    sol = jd.diffeqsolve(
        jd.ODETerm(_decay),
        jd.Tsit5(),
        0.0,
        1.0,
        0.1,
        y0,
        jnp.asarray(0.5),
        saveat=jd.SaveAt(ts=ts),
        stepsize_controller=jd.ConstantStepSize(),
    )
    assert sol.ys is not None
    exact = y0[None, :] * jnp.exp(-0.5 * ts)[:, None]
    np.testing.assert_allclose(sol.ys, exact, rtol=1e-6)


def test_output_width_follows_the_outputs_per_step_and_the_state_size():
    from jaxdiffeq._loop.config import ts_width, width_class

    assert ts_width(7, 2) == 7  # no wider than `ts`
    assert ts_width(7, 2, hint=1) == 1
    assert ts_width(1000, 3) == 32  # without a hint (times traced)
    assert ts_width(100_000, 3) == 512  # as if about 256 steps
    assert ts_width(100_000, 3, hint=1024) == 1024
    assert ts_width(100_000, 8, hint=1024) == 512  # the state-size budget
    assert ts_width(1000, 1000, hint=64) == 4  # the state-size budget
    assert ts_width(1000, 10**5, hint=64) == 1
    assert width_class(None) is None
    assert [width_class(d) for d in (0.1, 1.0, 2.5, 10.0, 1e4)] == [1, 4, 16, 64, 1024]


def test_row_by_row_writes_for_small_states_and_few_outputs_per_step():
    from jaxdiffeq._loop.config import loop_writes

    assert loop_writes(3, 1024)  # a few elements: at any width
    assert loop_writes(32, 16) and not loop_writes(32, 64)
    assert not loop_writes(33, 1)  # larger states: the vectorised writes


def test_known_times_choose_the_width_from_outputs_per_dt0_step():
    """100 outputs on [0, 1] with dt0 = 0.1 (about 10 per step) are written 64 at
    a time; the same outputs with dt0 = 0.001 one at a time; both are right."""
    import jaxdiffeq._loop.config as config

    widths = []
    original = config.ts_width

    def spy(num_ts, state_size, hint=None):
        widths.append(original(num_ts, state_size, hint))
        return widths[-1]

    ts = jnp.linspace(0.0, 1.0, 100)
    config.ts_width = spy
    try:
        for dt0 in (0.1, 0.001):
            sol = jd.diffeqsolve(
                jd.ODETerm(_decay),
                jd.Tsit5(),
                0.0,
                1.0,
                dt0,
                Y0,
                jnp.asarray(0.5),
                saveat=jd.SaveAt(ts=ts),
                stepsize_controller=jd.PIDController(rtol=1e-8, atol=1e-10),
            )
            assert sol.ys is not None
            np.testing.assert_allclose(sol.ys, _exact(ts), rtol=1e-6)
    finally:
        config.ts_width = original
    assert widths == [64, 1]


def test_scatter_rows_derivatives_equal_a_plain_set():
    """`state.scatter_rows` (custom JVP: the rows written are constants until
    then) has the derivatives of `buffer.at[rows].set(values)` where the
    buffer's written rows do not depend on the input, forward and reverse;
    rows past the end are dropped."""
    from jaxdiffeq._loop.state import scatter_rows

    rows = jnp.asarray([1, 3, 7])  # 7 is past the end: dropped

    def buffer_of(x):
        # Rows 0, 2, 4 depend on x; rows 1 and 3 (to be written) are constants.
        b = jnp.full((5, 2), jnp.inf)
        return b.at[jnp.asarray([0, 2, 4])].set(jnp.stack([x, 2 * x, x**2]))

    def ours(x, v):
        b = scatter_rows(buffer_of(x), rows, v)
        return jnp.where(jnp.isfinite(b), b, 0)

    def plain(x, v):
        b = buffer_of(x).at[rows].set(v, mode="drop")
        return jnp.where(jnp.isfinite(b), b, 0)

    x = jnp.asarray([0.3, -1.2])
    v = jnp.asarray([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    dx, dv = jnp.asarray([0.7, 0.1]), jnp.ones((3, 2))
    np.testing.assert_allclose(
        jax.jvp(ours, (x, v), (dx, dv))[1], jax.jvp(plain, (x, v), (dx, dv))[1]
    )
    ct = jnp.arange(10.0).reshape(5, 2)
    for a, b in zip(jax.vjp(ours, x, v)[1](ct), jax.vjp(plain, x, v)[1](ct)):
        np.testing.assert_allclose(a, b)


def test_masked_write_derivatives_equal_a_plain_set():
    """`state.masked_write` (custom JVP, as `scatter_rows`) has the derivatives
    of a plain row set where the row written is a constant until then, in
    forward and reverse mode, alone and in a loop that writes one row per
    iteration; a masked-off write goes to the spill row."""
    from jaxdiffeq._loop.state import masked_write

    def buffer_of(x):
        # Rows 0 and 2 depend on x; rows 1 and 3 (to be written) are constants.
        b = jnp.full((4, 2), jnp.inf)
        return b.at[jnp.asarray([0, 2])].set(jnp.stack([x, x**2]))

    def finite(b):
        return jnp.where(jnp.isfinite(b), b, 0)

    def ours(x, v, pred):
        return finite(masked_write(buffer_of(x), 1, v, pred))

    def plain(x, v, pred):
        return finite(buffer_of(x).at[jnp.where(pred, 1, 3)].set(v))

    x, v = jnp.asarray([0.3, -1.2]), jnp.asarray([2.0, 5.0])
    dx, dv = jnp.asarray([0.7, 0.1]), jnp.asarray([1.0, -3.0])
    ct = jnp.arange(8.0).reshape(4, 2)
    for pred in (jnp.asarray(True), jnp.asarray(False)):
        f = functools.partial(ours, pred=pred)
        g = functools.partial(plain, pred=pred)
        a, b = jax.jvp(f, (x, v), (dx, dv)), jax.jvp(g, (x, v), (dx, dv))
        np.testing.assert_allclose(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1])
        ga, gb = jax.vjp(f, x, v)[1](ct), jax.vjp(g, x, v)[1](ct)
        for p, q in zip(ga, gb):
            np.testing.assert_allclose(p, q)

    def filled(x):
        # Each iteration writes its own row: the rows are constants until then.
        def body(i, b):
            return masked_write(b, i, x * (i + 1).astype(x.dtype), i < 2)

        return lax.fori_loop(0, 3, body, jnp.zeros((4, 2)))[:3]

    expected = jnp.stack([x, 2 * x, jnp.zeros(2)])
    np.testing.assert_allclose(filled(x), expected)
    tangent = jax.jvp(filled, (x,), (dx,))[1]
    np.testing.assert_allclose(tangent, jnp.stack([dx, 2 * dx, jnp.zeros(2)]))
    grad = jax.grad(lambda x: jnp.sum(filled(x) * ct[:3]))(x)
    np.testing.assert_allclose(grad, ct[0] + 2 * ct[1])
