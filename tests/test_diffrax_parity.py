"""Same solver, same controller, same problem as Diffrax 0.7.2: the same accepted
and rejected steps, and the same values to rounding (amplified by Lorenz's chaos).

Diffrax is a test dependency only; the library never imports it.
"""

import functools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import lorenz

import jaxdiffeq as jd
from jaxdiffeq._controller import initial_step
from jaxdiffeq.problems import PROBLEMS

SOLVERS = ["Tsit5", "Dopri5", "Bosh3", "Heun"]
Y0 = jnp.array([1.0, 1.0, 1.0])
T1 = 10.0
TS = jnp.linspace(0.0, T1, 11)
TOL = 1e-6
MAX_STEPS = 100_000  # Heun needs ~37,000 steps at this tolerance


def solve_ours(name, dt0):
    return jd.diffeqsolve(
        jd.ODETerm(lorenz),
        getattr(jd, name)(),
        0.0,
        T1,
        dt0,
        Y0,
        saveat=jd.SaveAt(ts=TS),
        stepsize_controller=jd.PIDController(rtol=TOL, atol=TOL),
        max_steps=MAX_STEPS,
    )


@functools.cache
def solve_diffrax(name, dt0):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(lorenz),
        getattr(diffrax, name)(),
        0.0,
        T1,
        dt0,
        Y0,
        saveat=diffrax.SaveAt(ts=TS),
        stepsize_controller=diffrax.PIDController(rtol=TOL, atol=TOL),
        max_steps=MAX_STEPS,
    )


def assert_same_solve(ours, theirs):
    for name in ("num_accepted_steps", "num_rejected_steps"):
        assert int(ours.stats[name]) == int(theirs.stats[name]), name
    assert ours.result == jd.RESULTS.successful
    np.testing.assert_allclose(ours.ts, theirs.ts, rtol=0, atol=0)
    np.testing.assert_allclose(ours.ys[-1], theirs.ys[-1], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.ys, theirs.ys, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", SOLVERS)
def test_parity_given_dt0(name):
    assert_same_solve(solve_ours(name, 0.01), solve_diffrax(name, 0.01))


def hairer_initial_step(f, t0, y0, order, rtol, atol):
    """Hairer, Nørsett & Wanner, Solving ODEs I, II.4, in NumPy (RMS norm)."""
    norm = lambda x: np.sqrt(np.mean(np.square(x)))  # noqa: E731
    scale = atol + rtol * np.abs(y0)
    f0 = f(t0, y0)
    d0, d1 = norm(y0 / scale), norm(f0 / scale)
    h0 = 1e-6 if min(d0, d1) < 1e-5 else 0.01 * d0 / d1
    f1 = f(t0 + h0, y0 + h0 * f0)
    d2 = norm((f1 - f0) / scale) / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1 / order)
    return min(100 * h0, h1)


@pytest.mark.parametrize("name", SOLVERS)
def test_parity_automatic_dt0(name):
    """`dt0=None` chooses the first step by Hairer's algorithm (DESIGN.md).

    Diffrax 0.7.2 documents the same algorithm, but its `diffeqsolve` wraps every
    term before the controller sees it, and its initial-step routine returns 0.01
    for anything that is not a bare `ODETerm`: in effect Diffrax always starts
    with 0.01. So the comparison is made from the same first step: ours, checked
    against an independent implementation of the algorithm, given to Diffrax.
    """
    solver = getattr(jd, name)()
    term = jd.ODETerm(lorenz)
    controller = jd.PIDController(rtol=TOL, atol=TOL)
    tnext, _ = controller.init(
        term, 0.0, T1, Y0, None, None, solver.func, solver.error_order(term)
    )
    expected = hairer_initial_step(
        lambda t, y: np.asarray(lorenz(t, jnp.asarray(y), None)),
        0.0,
        np.asarray(Y0),
        solver.error_order(term),
        TOL,
        TOL,
    )
    np.testing.assert_allclose(float(tnext), expected, rtol=1e-12)
    assert_same_solve(solve_ours(name, None), solve_diffrax(name, float(tnext)))


@pytest.mark.parametrize("name", ["rober", "pollu"])
def test_automatic_dt0_in_line_and_by_a_loop(name):
    """A vector field of more than `LOOP_SIZE` operations (POLLU) is evaluated
    in a loop of two turns for the starting step; a smaller one (ROBER) in
    line. Both give Hairer's step."""
    problem = PROBLEMS[name]
    term = jd.ODETerm(problem.f)
    size = initial_step._size(
        jax.make_jaxpr(problem.f)(problem.t0, problem.y0, problem.args).jaxpr
    )
    assert (size > initial_step.LOOP_SIZE) == (name == "pollu")
    controller = jd.PIDController(rtol=problem.rtol, atol=problem.atol)
    tnext, _ = controller.init(
        term,
        problem.t0,
        problem.t1,
        problem.y0,
        None,
        problem.args,
        jd.Kvaerno5().func,
        5,
    )
    expected = hairer_initial_step(
        lambda t, y: np.asarray(problem.f(t, jnp.asarray(y), problem.args)),
        problem.t0,
        np.asarray(problem.y0),
        5,
        problem.rtol,
        problem.atol,
    )
    np.testing.assert_allclose(float(tnext) - problem.t0, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "coefficients",
    [
        dict(pcoeff=0.4, icoeff=0.3),  # reads the previous error
        dict(pcoeff=0.2, icoeff=0.4, dcoeff=0.1),  # and the one before it
    ],
)
def test_parity_pid_coefficients(coefficients):
    """The proportional and derivative terms use the error history the controller
    carries from step to step; the step sequence must still equal Diffrax's."""

    def solve(lib):
        return lib.diffeqsolve(
            lib.ODETerm(lorenz),
            lib.Tsit5(),
            0.0,
            T1,
            0.01,
            Y0,
            saveat=lib.SaveAt(ts=TS),
            stepsize_controller=lib.PIDController(rtol=TOL, atol=TOL, **coefficients),
            max_steps=MAX_STEPS,
        )

    ours, theirs = solve(jd), solve(diffrax)
    assert_same_solve(ours, theirs)
    # The history matters: the integral controller alone takes other steps.
    plain = solve_ours("Tsit5", 0.01)
    assert int(ours.stats["num_steps"]) != int(plain.stats["num_steps"])
