"""The problem zoo: shapes and dtypes, and its reference solutions checked against
SciPy, published values and exact solutions."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import radau_at_t1, solve_problem
from scipy.integrate import solve_ivp
from scipy.special import ellipj, ellipk

import jaxdiffeq as jd
from jaxdiffeq.problems import (
    ARENSTORF,
    ARENSTORF_PERIOD,
    BRUSSELATOR,
    E5,
    LOTKA_VOLTERRA,
    PENDULUM,
    PLEIADES,
    PROBLEMS,
    brusselator_2d,
    get_problem,
)

_NAMES = list(PROBLEMS)
_NONSTIFF = [name for name, problem in PROBLEMS.items() if not problem.stiff]


def _scipy_solution(problem, rtol=1e-13, atol=1e-13):
    """The state at `t1`, solved as the stored references were (see problems.py)."""
    f = jax.jit(problem.f)
    sol = solve_ivp(
        lambda t, y, args: np.asarray(f(t, y, args)),
        (problem.t0, problem.t1),
        np.asarray(problem.initial_values, dtype=np.float64),
        args=(problem.args,),
        method="DOP853",
        rtol=rtol,
        atol=atol,
    )
    assert sol.status == 0, sol.message
    return sol.y[:, -1]


def test_names():
    assert set(_NAMES) >= {
        "lorenz",
        "van_der_pol",
        "lotka_volterra",
        "pendulum",
        "arenstorf",
        "pleiades",
        "rober",
        "hires",
        "orego",
        "vdpol",
        "e5",
        "pollu",
        "brusselator",
    }
    for name, problem in PROBLEMS.items():
        assert problem.name == name
        assert get_problem(name) is problem
    assert get_problem("Van-der-Pol") is PROBLEMS["van_der_pol"]


def test_unknown_problem():
    with pytest.raises(ValueError, match="Unknown problem 'nope'; valid names: lorenz"):
        get_problem("nope")


def test_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PENDULUM.t1 = 2.0  # pyright: ignore


@pytest.mark.parametrize("name", _NAMES)
def test_vector_field_shape_and_dtype(name):
    problem = PROBLEMS[name]
    n = len(problem.initial_values)
    assert len(problem.labels) == n
    for i, j in problem.phase_portraits:
        assert 0 <= i < n and 0 <= j < n
    assert problem.t1 > problem.t0
    assert problem.rtol > 0 and problem.atol > 0

    y0 = problem.y0
    assert y0.shape == (n,) and y0.dtype == jnp.float64
    out = problem.f(problem.t0, y0, problem.args)
    assert out.shape == (n,) and out.dtype == jnp.float64
    assert jnp.all(jnp.isfinite(out))
    out = jax.jit(problem.f)(problem.t0, y0, problem.args)
    assert out.shape == (n,)
    if problem.reference_values is not None:
        reference = problem.reference
        assert reference is not None
        assert reference.shape == (n,) and reference.dtype == jnp.float64

    # y0 is built when asked for, in the precision in force then.
    with jax.enable_x64(False):
        y0 = problem.y0
        assert y0.dtype == jnp.float32
        assert problem.f(problem.t0, y0, problem.args).dtype == jnp.float32


@pytest.mark.parametrize(
    "name",
    [name for name, p in PROBLEMS.items() if p.reference_source.startswith("scipy")],
)
def test_reference_matches_scipy(name):
    # Recompute each stored reference the way its comment says it was computed.
    problem = PROBLEMS[name]
    assert problem.reference_values is not None
    stored = np.asarray(problem.reference_values)
    recomputed = _scipy_solution(problem)
    scale = np.max(np.abs(stored))
    np.testing.assert_allclose(recomputed, stored, rtol=0, atol=1e-9 * scale)
    # And its accuracy: a tighter solve moves it by much less than that.
    tighter = _scipy_solution(problem, rtol=2.5e-14, atol=2.5e-14)
    np.testing.assert_allclose(tighter, stored, rtol=0, atol=1e-10 * scale)


def test_arenstorf_is_periodic():
    assert ARENSTORF.t1 == ARENSTORF_PERIOD
    assert ARENSTORF.reference_values == ARENSTORF.initial_values
    # One period of the orbit brings SciPy back to y0, to its accuracy.
    np.testing.assert_allclose(
        _scipy_solution(ARENSTORF), ARENSTORF.initial_values, rtol=0, atol=1e-8
    )


def test_pleiades_against_published_reference():
    # Mazzia & Magherini, "Test Set for Initial Value Problem Solvers" (release
    # 2.4, 2008), problem PLEI: the solution at t = 3, as published there. It checks
    # the vector field as well as our SciPy reference.
    published = [
        *(0.3706139143970502, 3.237284092057233, -3.222559032418324),
        *(0.6597091455775310, 0.3425581707156584, 1.562172101400631),
        *(-0.7003092922212495, -3.943437585517392, -3.271380973972550),
        *(5.225081843456543, -2.590612434977470, 1.198213693392275),
        *(-0.2429682344935824, 1.091449240428980, 3.417003806314313),
        *(1.354584501625501, -2.590065597810775, 2.025053734714242),
        *(-1.155815100160448, -0.8072988170223021, 0.5952396354208710),
        *(-3.741244961234010, 0.3773459685750630, 0.9386858869551073),
        *(0.3667922227200571, -0.3474046353808490, 2.344915448180937),
        -1.947020434263292,
    ]
    assert PLEIADES.reference_values is not None
    np.testing.assert_allclose(PLEIADES.reference_values, published, rtol=0, atol=1e-10)


def test_pendulum_against_exact_solution():
    # Released at rest from theta0: sin(theta / 2) = k sn(K - t; k) with
    # k = sin(theta0 / 2) (time scaled by sqrt(g / L) = 1), so
    # theta = 2 arcsin(k sn), omega = -2 k cn.
    theta0, omega0 = PENDULUM.initial_values
    assert omega0 == 0 and PENDULUM.args == 1.0
    k = np.sin(theta0 / 2)
    sn, cn, _, _ = ellipj(ellipk(k**2) - PENDULUM.t1, k**2)
    exact = [2 * np.arcsin(k * sn), -2 * k * cn]
    assert PENDULUM.reference_values is not None
    np.testing.assert_allclose(PENDULUM.reference_values, exact, rtol=0, atol=1e-11)


def test_lotka_volterra_conserves_its_invariant():
    alpha, beta, gamma, delta = LOTKA_VOLTERRA.args

    def invariant(y):
        x, z = y
        return delta * x - gamma * np.log(x) + beta * z - alpha * np.log(z)

    assert invariant(LOTKA_VOLTERRA.reference_values) == pytest.approx(
        invariant(LOTKA_VOLTERRA.initial_values), rel=1e-12
    )


@pytest.mark.parametrize("name", _NONSTIFF)
def test_solves_with_jaxdiffeq(name):
    # The zoo as meant to be used: at its suggested tolerances an adaptive solve
    # lands near the reference.
    problem = PROBLEMS[name]
    sol = solve_problem(problem, jd.Tsit5(), max_steps=100_000)
    reference = problem.reference
    assert reference is not None and sol.ys is not None
    error = jnp.max(jnp.abs(sol.ys[-1] - reference)) / jnp.max(jnp.abs(reference))
    assert error < 1e-5


@pytest.mark.parametrize(
    "name, atol",
    [("rober", 1e-20), ("hires", 1e-14), ("orego", 1e-10), ("vdpol", 1e-10)],
)
def test_stiff_reference_matches_radau(name, atol):
    """The published reference solutions (Bari test set) against SciPy's Radau
    at tight tolerances: checks our vector fields against the published
    problems."""
    problem = PROBLEMS[name]
    assert problem.stiff and problem.reference_values is not None
    published = np.asarray(problem.reference_values)
    ours = radau_at_t1(problem, rtol=1e-10, atol=atol)
    np.testing.assert_allclose(ours, published, rtol=1e-7, atol=1e-3 * atol)


@pytest.mark.slow
def test_pollu_reference_matches_radau():
    problem = PROBLEMS["pollu"]
    published = np.asarray(problem.reference_values)
    ours = radau_at_t1(problem, rtol=1e-10, atol=1e-20)
    np.testing.assert_allclose(ours, published, rtol=1e-6, atol=1e-22)


def test_pollu_vector_field_at_the_reference():
    # Three rates written out from the report's equations, at the reference
    # state: species 8 (index 7) is made by reactions 4-7 and used by none,
    # species 12 (index 11) by reaction 9 alone, species 17 (index 16) used by
    # reaction 20 alone.
    problem = PROBLEMS["pollu"]
    y = np.asarray(problem.reference_values)
    f = np.asarray(problem.f(0.0, jnp.asarray(y), None))
    np.testing.assert_allclose(
        f[7], 0.86e-3 * y[6] + 0.82e-3 * y[6] + 0.15e5 * y[6] * y[5] + 0.13e-3 * y[8]
    )
    np.testing.assert_allclose(f[11], 0.165e5 * y[10] * y[1])
    np.testing.assert_allclose(f[16], -0.124e4 * y[16] * y[5])


def test_e5_structure_and_reference():
    # y3 - y2 + y4 is conserved by the equations (zero at t0), to rounding.
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = jnp.asarray(rng.uniform(0, 1e-3, size=4))
        f = np.asarray(E5.f(0.0, y, E5.args))
        assert abs(f[2] - f[1] + f[3]) <= 1e-12 * np.max(np.abs(f))
    # The published solution at 1e13 is of size 1e-22 and below, beyond what
    # SciPy's Radau resolves (its y2 there moves between 1e-22 and 1e-20 with
    # `atol`), so it is not recomputed here; it keeps the invariant to the
    # published digits' accuracy (0.15%).
    y1, y2, y3, y4 = E5.reference_values
    assert abs(y3 - y2 + y4) <= 2e-3 * y2


def _brusselator_loops(n, t, y, alpha=0.1):
    # An independent, loop-by-loop writing of the 2-D Brusselator.
    u = y[: n * n].reshape(n, n)
    v = y[n * n :].reshape(n, n)
    du, dv = np.zeros((n, n)), np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            x_i, y_j = i / n, j / n

            def lap(w, i=i, j=j):
                return (
                    n
                    * n
                    * (
                        w[(i + 1) % n, j]
                        + w[i - 1, j]
                        + w[i, (j + 1) % n]
                        + w[i, j - 1]
                        - 4 * w[i, j]
                    )
                )

            forced = t >= 1.1 and (x_i - 0.3) ** 2 + (y_j - 0.6) ** 2 <= 0.01
            du[i, j] = (
                1
                + u[i, j] ** 2 * v[i, j]
                - 4.4 * u[i, j]
                + alpha * lap(u)
                + (5.0 if forced else 0.0)
            )
            dv[i, j] = 3.4 * u[i, j] - u[i, j] ** 2 * v[i, j] + alpha * lap(v)
    return np.concatenate([du.ravel(), dv.ravel()])


@pytest.mark.parametrize("n", [5, 16])
def test_brusselator_against_loops(n):
    problem = brusselator_2d(n)
    assert len(problem.initial_values) == 2 * n * n and problem.stiff
    rng = np.random.default_rng(n)
    y = np.asarray(problem.initial_values) + rng.uniform(0, 1, 2 * n * n)
    for t in (0.0, 2.0):
        ours = np.asarray(problem.f(t, jnp.asarray(y), problem.args))
        np.testing.assert_allclose(ours, _brusselator_loops(n, t, y), rtol=1e-12)
    # Equal sizes give equal (hashable) vector fields: one compile serves both.
    assert brusselator_2d(16).f == BRUSSELATOR.f
    assert hash(brusselator_2d(16).f) == hash(BRUSSELATOR.f)


def test_brusselator_bad_size():
    with pytest.raises(ValueError, match="`n` must be an integer of at least 3"):
        brusselator_2d(2)
