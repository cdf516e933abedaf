"""Shared by the test modules: the list of solvers with their known orders, and
small problems with exact solutions.

Adding an explicit Runge–Kutta method means adding one entry to `SOLVERS`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

import jaxdiffeq as jd


class SolverCase(NamedTuple):
    """A solver and the orders it is known (from the literature) to have."""

    name: str
    solver: jd.AbstractSolver
    order: int  # global order of convergence on ODEs
    # Global order of `Solution.evaluate` between step ends: min(order, q + 1) for
    # an interpolant whose local error is O(h^(q+1)).
    dense_order: int
    # Global order of `Solution.derivative`: min(order, q).
    derivative_order: int
    # Multiplies the numbers of steps of the convergence test, for methods whose
    # asymptotic regime starts at smaller steps (or whose errors reach rounding
    # early).
    steps_scale: float = 1
    # Whether the method converges at its order on a decaying problem with the
    # test's step sizes. The coupled (y, z) scheme of `Reversible` does not: its
    # parasitic mode grows by about `coupling * exp(h |a|)` per step on a mode
    # decaying at rate `a` (documented in docs/choosing-an-adjoint.md).
    damped_ok: bool = True
    # How far above `order` the fitted order may lie. `Reversible(Tsit5)` is close
    # to a symmetric method and measures 5.5-5.8 on the cos problem.
    order_excess: float = 0.3


SOLVERS = [
    SolverCase("Euler", jd.Euler(), 1, 1, 1),  # linear interpolation, q = 1
    SolverCase("Heun", jd.Heun(), 2, 2, 2),  # cubic Hermite, q = 3
    # Quadratic through both ends with the first stage as slope at t0, q = 2.
    SolverCase("Midpoint", jd.Midpoint(), 2, 2, 2),
    SolverCase("Ralston", jd.Ralston(), 2, 2, 2),
    SolverCase("Bosh3", jd.Bosh3(), 3, 3, 3),  # cubic Hermite (FSAL, exact ends)
    SolverCase("Tsit5", jd.Tsit5(), 5, 5, 4),  # Tsitouras' quartic, q = 4
    SolverCase("Dopri5", jd.Dopri5(), 5, 5, 4),  # Shampine's quartic, q = 4
    SolverCase("Dopri8", jd.Dopri8(), 8, 6, 5),  # fifth-order dense output, q = 5
    SolverCase("HalfSolver(Euler)", jd.HalfSolver(jd.Euler()), 1, 1, 1),
    SolverCase("HalfSolver(Heun)", jd.HalfSolver(jd.Heun()), 2, 2, 2),
    # Reversible solvers (linear interpolation, q = 1, unless wrapped).
    # Its parasitic mode (it is a two-step method) delays the asymptotic regime.
    SolverCase("ReversibleHeun", jd.ReversibleHeun(), 2, 2, 1, steps_scale=4),
    SolverCase("LeapfrogMidpoint", jd.LeapfrogMidpoint(), 2, 2, 1),
    SolverCase("Reversible(Euler)", jd.Reversible(jd.Euler()), 1, 1, 1, 1, False),
    SolverCase("Reversible(Midpoint)", jd.Reversible(jd.Midpoint()), 2, 2, 2, 1, False),
    SolverCase(
        "Reversible(Tsit5)", jd.Reversible(jd.Tsit5()), 5, 5, 4, 0.5, False, 1.0
    ),
]
SOLVER_IDS = [case.name for case in SOLVERS]


def fitted_order(dts, errors) -> float:
    """Least-squares slope of log(error) against log(dt)."""
    return float(np.polyfit(np.log(np.asarray(dts)), np.log(np.asarray(errors)), 1)[0])


# y' = y cos(t): non-autonomous and scalar (shape ()), y(t) = y0 exp(sin t).
def cos_vector_field(t, y, args):
    del args
    return y * jnp.cos(t)


def cos_exact(t, y0):
    t = np.asarray(t, dtype=np.float64)
    return np.exp(np.sin(t))[(...,) + (None,) * np.ndim(y0)] * np.asarray(y0)


# The logistic equation y' = y (1 - y): nonlinear and autonomous;
# y(t) = 1 / (1 + (1 / y0 - 1) exp(-t)) for a vector state y0.
def logistic_vector_field(t, y, args):
    del t, args
    return y * (1 - y)


def logistic_exact(t, y0):
    t = np.asarray(t, dtype=np.float64)[..., None]
    y0 = np.asarray(y0)
    return 1 / (1 + (1 / y0 - 1) * np.exp(-t))


def lorenz(t, y, args):
    """The Lorenz system; `args = (sigma, rho, beta)` or `None` for the classical
    (10, 28, 8/3)."""
    del t
    sigma, rho, beta = (10.0, 28.0, 8.0 / 3.0) if args is None else args
    return jnp.stack(
        [
            sigma * (y[1] - y[0]),
            y[0] * (rho - y[2]) - y[1],
            y[0] * y[1] - beta * y[2],
        ]
    )


def output_rows(ts, times) -> np.ndarray:
    """The rows of a `SaveAt(t0=True, ts=times, steps=..., t1=True)` output that
    hold, in order, `t0`, each of `times` and `t1`. Outputs are in Diffrax's
    order (chronological, a `ts` output before a step at the same time), and the
    last finite row is the final state."""
    ts = np.asarray(ts)
    finite = np.flatnonzero(np.isfinite(ts))
    rows = [int(finite[0])]
    for t in np.asarray(times):
        after = np.flatnonzero((ts == t) & (np.arange(ts.size) > rows[-1]))
        rows.append(int(after[0]))
    rows.append(int(finite[-1]))
    return np.asarray(rows)


def radau_at_t1(problem, rtol, atol):
    """SciPy's Radau IIA (an independent implementation) at `t1`, with the
    Jacobian of `problem.f` by `jax.jacfwd`."""
    f = jax.jit(problem.f)
    jac = jax.jit(jax.jacfwd(problem.f, argnums=1))
    sol = solve_ivp(
        lambda t, y: np.asarray(f(t, y, problem.args)),
        (problem.t0, problem.t1),
        np.asarray(problem.initial_values, dtype=np.float64),
        method="Radau",
        jac=lambda t, y: np.asarray(jac(t, y, problem.args)),
        rtol=rtol,
        atol=atol,
    )
    assert sol.status == 0, sol.message
    return sol.y[:, -1]


def solve_problem(problem, solver, **kwargs):
    """`problem` from `jaxdiffeq.problems` solved by `solver` over its interval
    at its suggested tolerances (`kwargs` go to `diffeqsolve`)."""
    return jd.diffeqsolve(
        jd.ODETerm(problem.f),
        solver,
        problem.t0,
        problem.t1,
        None,
        problem.y0,
        problem.args,
        stepsize_controller=jd.PIDController(rtol=problem.rtol, atol=problem.atol),
        **kwargs,
    )


def scaled_error_at_t1(problem, solver):
    """The error of `solver` at `problem.t1`, at the problem's suggested
    tolerances, in units of `atol + rtol |reference|` (the solve must succeed)."""
    sol = solve_problem(problem, solver, max_steps=20_000, throw=False)
    assert sol.result == jd.RESULTS.successful
    reference = np.asarray(problem.reference)
    scale = problem.atol + problem.rtol * np.abs(reference)
    return float(np.max(np.abs(np.asarray(sol.ys[-1]) - reference) / scale))
