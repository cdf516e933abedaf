"""Empirical order of convergence of every solver, on problems with exact solutions.

With `ConstantStepSize`, the largest error over all step ends is measured for
several step sizes, and the least-squares slope of log(error) against log(dt)
must be within 0.3 of `solver.order(term)`. The step sizes are chosen per order so
that the errors are in the asymptotic regime and well above float64 rounding.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    SOLVER_IDS,
    SOLVERS,
    cos_exact,
    cos_vector_field,
    fitted_order,
    logistic_exact,
    logistic_vector_field,
)

import jaxdiffeq as jd

PROBLEMS = {
    # name: (vector field, y0, t1, exact solution)
    "cos": (cos_vector_field, np.array(1.0), 4.0, cos_exact),
    "logistic": (logistic_vector_field, np.array([0.1, 0.3]), 8.0, logistic_exact),
}

# Number of steps over [0, t1], by order. Powers of two keep dt exact in binary
# for the low orders; for order 8 the range stops where the error nears 1e-13.
NUM_STEPS = {
    1: [64, 128, 256, 512],
    2: [32, 64, 128, 256],
    3: [32, 64, 128, 256],
    5: [64, 96, 128, 192, 256],
    8: [12, 16, 24, 32],
}


def max_step_error(solver, problem, num_steps, scale=1):
    vector_field, y0, t1, exact = PROBLEMS[problem]
    max_steps = round(scale * max(NUM_STEPS[solver.order(None)])) + 2  # one compile
    sol = jd.diffeqsolve(
        jd.ODETerm(vector_field),
        solver,
        0.0,
        t1,
        t1 / num_steps,
        jnp.asarray(y0),
        saveat=jd.SaveAt(steps=True),
        max_steps=max_steps,
    )
    assert sol.result == jd.RESULTS.successful
    assert int(sol.stats["num_accepted_steps"]) == num_steps
    ts = np.asarray(sol.ts)
    reached = np.isfinite(ts)
    assert reached.sum() == num_steps
    np.testing.assert_allclose(ts[reached][-1], t1, rtol=1e-14)
    ys = np.asarray(sol.ys)[reached]
    return np.max(np.abs(ys - exact(ts[reached], y0)))


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("case", SOLVERS, ids=SOLVER_IDS)
def test_convergence_order(case, problem):
    term = jd.ODETerm(PROBLEMS[problem][0])
    order = case.solver.order(term)
    assert order == case.order, "the solver reports a different order"
    if problem == "logistic" and not case.damped_ok:
        pytest.skip("the method's parasitic mode grows on this decaying problem")
    num_steps = [round(case.steps_scale * n) for n in NUM_STEPS[order]]
    t1 = PROBLEMS[problem][2]
    dts = [t1 / n for n in num_steps]
    errors = [
        max_step_error(case.solver, problem, n, case.steps_scale) for n in num_steps
    ]
    # Sanity: the errors shrink monotonically and are far above rounding.
    assert all(np.diff(errors) < 0), errors
    assert min(errors) > 5e-14, errors
    slope = fitted_order(dts, errors)
    assert order - 0.3 <= slope <= order + case.order_excess, (slope, errors)


def test_error_estimate_order():
    """The embedded error estimate of a pair of orders p(p-1) is the local error
    of the order-(p-1) member, O(h^p): its fitted order is `error_order`, the
    exponent the step-size controller relies on."""
    term = jd.ODETerm(cos_vector_field)
    y0 = jnp.asarray(1.3)
    for solver in (jd.Heun(), jd.Bosh3(), jd.Tsit5(), jd.Dopri5(), jd.Dopri8()):
        p = solver.error_order(term)
        hs = [0.1, 0.05, 0.025] if p < 8 else [0.8, 0.4, 0.2]
        errors = []
        for h in hs:
            state = solver.init(term, 0.3, 0.3 + h, y0, None)
            _, y_error, _, _, _ = solver.step(
                term, 0.3, 0.3 + h, y0, None, state, made_jump=False
            )
            errors.append(abs(float(y_error)))
        slope = fitted_order(hs, errors)
        assert min(errors) > 1e-13, (type(solver).__name__, errors)
        assert abs(slope - p) <= 0.3, (type(solver).__name__, slope, errors)
