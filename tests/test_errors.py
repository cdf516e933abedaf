"""Bad inputs and failed solves give clear errors: the exact exception type and
(part of) a message that says what is wrong."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiffeq as jd

TERM = jd.ODETerm(lambda t, y, args: -y)
Y0 = jnp.array([1.0, 2.0])


def solve(terms=TERM, solver=None, t0=0.0, t1=1.0, dt0=0.1, y0=Y0, **kwargs):
    solver = jd.Tsit5() if solver is None else solver
    return jd.diffeqsolve(terms, solver, t0, t1, dt0, y0, **kwargs)


# ---------------------------------------------------------------- terms and solvers


def test_bare_function_as_terms():
    with pytest.raises(TypeError, match="not a bare function"):
        solve(terms=lambda t, y, args: -y)


def test_tuple_of_terms_for_single_term_solver():
    with pytest.raises(TypeError, match="`Tsit5` expects terms of type"):
        solve(terms=(TERM, TERM))


def test_not_a_solver():
    with pytest.raises(TypeError, match="`solver` must be a solver"):
        solve(solver="tsit5")


def test_not_a_saveat():
    with pytest.raises(TypeError, match="`saveat` must be a `SaveAt`"):
        solve(saveat=[0.5])


def test_not_a_controller():
    with pytest.raises(TypeError, match="`stepsize_controller` must be"):
        solve(stepsize_controller="pid")


def test_pid_controller_needs_an_error_estimate():
    controller = jd.PIDController(rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="does not estimate its error"):
        solve(solver=jd.Euler(), stepsize_controller=controller)
    with pytest.raises(ValueError, match="HalfSolver"):
        solve(solver=jd.Euler(), dt0=None, stepsize_controller=controller)


# ---------------------------------------------------------------- the state y0


@pytest.mark.parametrize(
    "y0, message",
    [
        (("abc", 1.0), r"y0\[0\] has type str"),
        ({"a": Y0, "b": object()}, r"y0\['b'\] has type object"),
        (
            np.array(["a", "b"]),
            "y0 has dtype <U1; every leaf of `y0` must hold numbers",
        ),
    ],
    ids=["str", "object", "str-array"],
)
def test_state_that_is_not_numbers(y0, message):
    # Integer and boolean leaves are promoted, as in Diffrax (see
    # test_diffrax_behaviour.py); leaves that are not numbers are errors.
    with pytest.raises(TypeError, match=message):
        solve(terms=jd.ODETerm(lambda t, y, args: y), y0=y0)


def test_vector_field_structure_mismatch():
    term = jd.ODETerm(lambda t, y, args: [y])
    with pytest.raises(ValueError, match="different structure than `y0`"):
        solve(terms=term)


def test_vector_field_shape_mismatch():
    term = jd.ODETerm(lambda t, y, args: {"a": -y["a"], "b": -y["b"][:1]})
    with pytest.raises(ValueError, match=r"y0\['b'\] has shape \(1,\)"):
        solve(terms=term, y0={"a": Y0, "b": Y0})


def test_vector_field_dtype_mismatch():
    term = jd.ODETerm(lambda t, y, args: {"a": -y["a"], "b": y["b"].astype("float32")})
    with pytest.raises(ValueError, match=r"y0\['b'\] has dtype float32"):
        solve(terms=term, y0={"a": Y0, "b": Y0})


# ---------------------------------------------------------------- times


@pytest.mark.parametrize(
    "t0, t1, dt0, message",
    [
        (0.0, 1.0, 0.0, "`dt0` must be a non-zero number"),
        (0.0, 1.0, float("nan"), "`dt0` must be a non-zero number"),
        (0.0, 1.0, -0.1, "`dt0` points away from `t1`"),
        (1.0, 0.0, 0.1, "`dt0` points away from `t1`"),
        (0.0, float("inf"), 0.1, "must be finite"),
        (float("nan"), 1.0, 0.1, "must be finite"),
    ],
    ids=["zero", "nan", "away", "away-backward", "inf-t1", "nan-t0"],
)
def test_bad_times_eager(t0, t1, dt0, message):
    with pytest.raises(ValueError, match=message):
        solve(t0=t0, t1=t1, dt0=dt0)


def test_bad_dt0_under_jit():
    """Traced times are checked at run time."""
    f = jax.jit(lambda dt0: solve(dt0=dt0).ys)
    with pytest.raises(RuntimeError, match="`dt0` points away from `t1`"):
        jax.block_until_ready(f(-0.1))
    with pytest.raises(RuntimeError, match="`dt0` must be a non-zero number"):
        jax.block_until_ready(f(0.0))
    np.testing.assert_allclose(f(0.1)[0], np.exp(-1.0) * Y0, rtol=1e-6)


def test_dt0_none_with_constant_step_size():
    with pytest.raises(ValueError, match="`dt0=None` needs an adaptive"):
        solve(dt0=None)


# ---------------------------------------------------------------- SaveAt


def test_empty_saveat():
    # As in Diffrax, `SaveAt()` saves nothing (e.g. to keep only the final solver
    # state); an empty `SubSaveAt` is an error.
    sol = solve(saveat=jd.SaveAt(solver_state=True))
    assert sol.ts is None and sol.ys is None and sol.solver_state is not None
    for adjoint in (jd.BacksolveAdjoint(), jd.ReversibleAdjoint(), jd.DirectAdjoint()):
        assert solve(saveat=jd.SaveAt(), adjoint=adjoint).ys is None
    with pytest.raises(ValueError, match="Empty `SubSaveAt`"):
        jd.SubSaveAt()


def test_saveat_subs_and_direct_arguments():
    with pytest.raises(ValueError, match="not both"):
        jd.SaveAt(t0=True, subs=jd.SubSaveAt(t1=True))


def test_saveat_ts_not_one_dimensional():
    with pytest.raises(ValueError, match="one-dimensional"):
        jd.SaveAt(ts=jnp.zeros((2, 2)))


def test_saveat_negative_steps():
    with pytest.raises(ValueError, match="`steps`"):
        jd.SaveAt(steps=-1)


def test_saveat_empty_ts():
    with pytest.raises(ValueError, match="ts"):
        solve(saveat=jd.SaveAt(ts=jnp.array([])))


@pytest.mark.parametrize(
    "ts, message",
    [
        ([0.5, 0.2], "must be sorted"),
        ([0.2, 1.5], r"must lie inside \[t0, t1\]"),
        ([-0.1, 0.5], r"must lie inside \[t0, t1\]"),
    ],
    ids=["unsorted", "after-t1", "before-t0"],
)
def test_saveat_ts_bad_values(ts, message):
    ts = jnp.asarray(ts)
    with pytest.raises(ValueError, match=message):
        solve(saveat=jd.SaveAt(ts=ts))
    # Traced ts: the same check at run time.
    f = jax.jit(lambda ts: solve(saveat=jd.SaveAt(ts=ts)).ys)
    with pytest.raises(RuntimeError, match=message):
        jax.block_until_ready(f(ts))
    f = eqx.filter_jit(lambda ts: solve(saveat=jd.SaveAt(ts=ts)).ys)
    with pytest.raises(eqx.EquinoxRuntimeError, match=message):
        jax.block_until_ready(f(ts))


def test_saveat_ts_backward_must_descend():
    with pytest.raises(ValueError, match="must be sorted"):
        solve(t1=-1.0, dt0=-0.1, saveat=jd.SaveAt(ts=jnp.array([-0.5, -0.2])))
    # Descending ts are fine backwards.
    sol = solve(t1=-1.0, dt0=-0.1, saveat=jd.SaveAt(ts=jnp.array([-0.2, -0.5])))
    np.testing.assert_allclose(
        sol.ys, np.exp([0.2, 0.5])[:, None] * np.asarray(Y0), rtol=1e-6
    )


@pytest.mark.parametrize(
    "saveat", [jd.SaveAt(steps=True), jd.SaveAt(t1=True, dense=True)], ids=str
)
def test_max_steps_none_with_buffers(saveat):
    with pytest.raises(ValueError, match="`max_steps=None` cannot be used"):
        solve(saveat=saveat, max_steps=None)


def test_max_steps_none_without_buffers_works():
    sol = solve(max_steps=None, saveat=jd.SaveAt(t1=True, ts=jnp.array([0.5])))
    np.testing.assert_allclose(
        sol.ys, np.exp([-0.5, -1.0])[:, None] * np.asarray(Y0), rtol=1e-6
    )


@pytest.mark.parametrize("max_steps", [0, -3, 2.5, True])
def test_bad_max_steps(max_steps):
    with pytest.raises(ValueError, match="`max_steps` must be a positive int"):
        solve(max_steps=max_steps)


def test_evaluate_without_dense():
    sol = solve()
    with pytest.raises(ValueError, match="no dense output"):
        sol.evaluate(0.5)
    with pytest.raises(ValueError, match="no dense output"):
        sol.derivative(0.5)


# ---------------------------------------------------------------- StepTo


def test_step_to_bad_arguments():
    with pytest.raises(ValueError, match="strictly monotonic"):
        jd.StepTo([0.0, 0.5, 0.2, 1.0])
    with pytest.raises(ValueError, match="length >= 2"):
        jd.StepTo([0.0])
    with pytest.raises(ValueError, match="pass `dt0=None`"):
        solve(stepsize_controller=jd.StepTo([0.0, 0.5, 1.0]))


@pytest.mark.parametrize(
    "t0, t1", [(0.2, 1.0), (0.0, 0.8), (0.0, 1.5)], ids=["t0", "t1", "t1-after"]
)
def test_step_to_must_match_interval(t0, t1):
    with pytest.raises((ValueError, RuntimeError), match="StepTo"):
        sol = solve(
            t0=t0,
            t1=t1,
            dt0=None,
            stepsize_controller=jd.StepTo([0.0, 0.5, 1.0]),
        )
        jax.block_until_ready(sol.ys)


def test_step_to_traced_non_monotonic():
    f = jax.jit(
        lambda ts: (
            solve(
                dt0=None,
                stepsize_controller=jd.StepTo(ts),
                saveat=jd.SaveAt(steps=True),
                max_steps=3,
            ).ys
        )
    )
    with pytest.raises(RuntimeError, match="monotonic"):
        jax.block_until_ready(f(jnp.array([0.0, 0.6, 0.3, 1.0])))


# ---------------------------------------------------------------- failed solves


def test_max_steps_reached_throw():
    with pytest.raises(RuntimeError, match="max_steps"):
        jax.block_until_ready(solve(max_steps=5).ys)


def test_max_steps_reached_no_throw():
    """The outputs saved before the failure are there and accurate; later ones
    are inf; the last step's row holds the state where the solve stopped."""
    ts = jnp.linspace(0.0, 1.0, 6)
    sol = solve(
        solver=jd.Heun(),
        dt0=0.1,
        max_steps=5,
        throw=False,
        saveat=jd.SaveAt(t0=True, ts=ts, steps=True, t1=True),
    )
    assert sol.result == jd.RESULTS.max_steps_reached
    assert not jd.is_successful(sol.result)
    assert int(sol.stats["num_steps"]) == 5
    times = np.asarray(sol.ts)
    ys = np.asarray(sol.ys)
    # In Diffrax's order: t0, ts 0, step .1, ts .2, step .2, step .3, ts .4,
    # step .4, step .5 (the last step: the t1 output); ts .6, .8, 1 not reached.
    reached = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=bool)
    assert np.all(np.isfinite(ys[reached])) and np.all(np.isfinite(times[reached]))
    assert np.all(np.isinf(ys[~reached])) and np.all(np.isinf(times[~reached]))
    np.testing.assert_allclose(times[reached][-1], 0.5, rtol=1e-14)
    np.testing.assert_allclose(
        ys[reached], np.exp(-times[reached])[:, None] * np.asarray(Y0), rtol=1e-3
    )


def _nan_after_half(t, y, args):
    return jnp.where(t > 0.5, jnp.nan, -y)


@pytest.mark.parametrize(
    "controller, dt0",
    [
        (jd.ConstantStepSize(), 0.1),
        (jd.PIDController(rtol=1e-6, atol=1e-6), None),
        (jd.PIDController(rtol=1e-6, atol=1e-6), 0.1),
    ],
    ids=["constant", "pid", "pid-dt0"],
)
def test_nan_vector_field(controller, dt0):
    """A NaN from the vector field is a failed solve, never a successful one with
    NaN outputs."""
    ts = jnp.linspace(0.0, 1.0, 6)
    kwargs = dict(
        terms=jd.ODETerm(_nan_after_half),
        dt0=dt0,
        stepsize_controller=controller,
        saveat=jd.SaveAt(ts=ts),
    )
    sol = solve(throw=False, **kwargs)
    assert not jd.is_okay(sol.result)
    assert sol.result != jd.RESULTS.internal_error
    ys = np.asarray(sol.ys)
    assert not np.any(np.isnan(ys))
    # Outputs before t = 0.5 are accurate, the others inf.
    np.testing.assert_allclose(
        ys[:3], np.exp(-np.asarray(ts[:3]))[:, None] * np.asarray(Y0), rtol=1e-5
    )
    assert np.all(np.isinf(ys[3:]))
    # The failed attempt counts as a step that was not accepted.
    stats = {k: int(v) for k, v in sol.stats.items()}
    assert (
        stats["num_steps"] == stats["num_accepted_steps"] + stats["num_rejected_steps"]
    )
    assert stats["num_rejected_steps"] >= 1
    with pytest.raises(RuntimeError):
        jax.block_until_ready(solve(**kwargs).ys)


def _nan_in_one_element_after_half(t, y, args):
    """Decay, with one element NaN after `t = 0.5` in lanes where `args` is true."""
    dy = -y
    return dy.at[7].set(jnp.where((t > 0.5) & args, jnp.nan, dy[7]))


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "vmap"])
def test_nonfinite_large_state(batched):
    """A NaN in one element of a large state (tested by a sum, not elementwise)
    fails the solve, and the `t1` output holds the last finite state."""
    n = 5000
    y0 = jnp.linspace(1.0, 2.0, n)

    def run(poison):
        sol = solve(
            terms=jd.ODETerm(_nan_in_one_element_after_half),
            solver=jd.Euler(),
            dt0=0.125,
            y0=y0,
            args=poison,
            throw=False,
        )
        return sol.result._value, sol.ts, sol.ys

    poison = jnp.array([True, False])
    if batched:
        codes, ts, ys = jax.vmap(run)(poison)
    else:
        outs = [run(p) for p in poison]
        codes, ts, ys = (jnp.stack(x) for x in zip(*outs))
    assert int(codes[0]) == jd.RESULTS.nonfinite_value._value
    assert int(codes[1]) == jd.RESULTS.successful._value
    # Euler's step from 0.625 is the first to see the NaN: the solve stops there.
    assert float(ts[0, 0]) == 0.625
    np.testing.assert_allclose(ys[0, 0], y0 * (1 - 0.125) ** 5, rtol=1e-12)
    np.testing.assert_allclose(ys[1, 0], y0 * (1 - 0.125) ** 8, rtol=1e-12)


def test_huge_finite_large_state_succeeds():
    """A large state whose elements are finite but sum past the largest float is
    finite: the fast test's overflow must not fail the solve."""
    y0 = jnp.full(5000, 1e308)
    sol = solve(terms=jd.ODETerm(lambda t, y, args: 0 * y), solver=jd.Euler(), y0=y0)
    assert sol.result == jd.RESULTS.successful
    np.testing.assert_array_equal(sol.ys[-1], y0)


def test_nan_initial_state_fails():
    sol = solve(
        y0=jnp.array([jnp.nan, 1.0]),
        dt0=None,
        stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-6),
        throw=False,
    )
    assert not jd.is_okay(sol.result)


def test_dt_min_reached():
    """y' = y^2, y(0) = 1 blows up at t = 1: the steps shrink below dtmin."""
    controller = jd.PIDController(rtol=1e-6, atol=1e-6, dtmin=1e-4, force_dtmin=False)
    sol = solve(
        terms=jd.ODETerm(lambda t, y, args: y**2),
        t1=2.0,
        dt0=0.1,
        y0=jnp.asarray(1.0),
        stepsize_controller=controller,
        throw=False,
        max_steps=10_000,
    )
    assert sol.result == jd.RESULTS.dt_min_reached
    assert int(sol.stats["num_steps"]) < 10_000
    # Stopped just before the singularity, at the state y = 1 / (1 - t) (to the
    # accuracy the blow-up allows).
    t_stop = float(sol.ts[0])
    assert 0.99 < t_stop < 1.0
    np.testing.assert_allclose(sol.ys[0], 1 / (1 - t_stop), rtol=1e-2)
    with pytest.raises(RuntimeError, match="dtmin"):
        jax.block_until_ready(
            solve(
                terms=jd.ODETerm(lambda t, y, args: y**2),
                t1=2.0,
                dt0=0.1,
                y0=jnp.asarray(1.0),
                stepsize_controller=controller,
                max_steps=10_000,
            ).ys
        )


def test_result_messages():
    """Every failure code has a message that says what to try."""
    assert "max_steps" in jd.RESULTS.message(jd.RESULTS.max_steps_reached)
    assert "dtmin" in jd.RESULTS.message(jd.RESULTS.dt_min_reached)
    for name in jd.RESULTS.names():
        if name != "successful":
            assert len(jd.RESULTS.message(getattr(jd.RESULTS, name))) > 20


# ---------------------------------------------------------------- unsupported


def test_events_not_supported():
    with pytest.raises(NotImplementedError, match="Events"):
        solve(event=object())


def test_adjoint_must_be_an_adjoint():
    with pytest.raises(TypeError, match="adjoint"):
        solve(adjoint=object())
