"""A zoo of standard initial value problems, for the command line, the benchmarks and
the tests.

```python
import jaxdiffeq as jd
from jaxdiffeq.problems import get_problem

problem = get_problem("lorenz")
sol = jd.diffeqsolve(jd.ODETerm(problem.f), jd.Tsit5(), problem.t0, problem.t1,
                     None, problem.y0, problem.args,
                     stepsize_controller=jd.PIDController(rtol=problem.rtol,
                                                          atol=problem.atol))
error = abs(sol.ys[-1] - problem.reference).max()
```

Every problem is an immutable `Problem`. Its `y0` and `reference` are built when
asked for, so they are float64 when `jax_enable_x64` is on at that time and float32
otherwise.

The stiff problems (`Problem.stiff`) are six of the Bari test set (ROBER, HIRES,
OREGO, VDPOL, E5, POLLU) with their published reference solutions, and the 2-D
Brusselator (`brusselator_2d(n)` for other grid sizes). An explicit solver needs
a step size bounded by stability on them: solve them with an implicit solver.
"""

import jax.numpy as jnp

from ._problem import Problem as Problem
from ._stiff_problems import (
    BRUSSELATOR as BRUSSELATOR,
    E5 as E5,
    HIRES as HIRES,
    OREGO as OREGO,
    POLLU as POLLU,
    ROBER as ROBER,
    VDPOL as VDPOL,
    brusselator_2d as brusselator_2d,
)


def _lorenz(t, y, args):
    del t
    sigma, rho, beta = args
    u, v, w = y[0], y[1], y[2]
    return jnp.stack([sigma * (v - u), u * (rho - w) - v, u * v - beta * w])


def _van_der_pol(t, y, args):
    del t
    mu = args
    x, v = y[0], y[1]
    return jnp.stack([v, mu * (1 - x**2) * v - x])


def _lotka_volterra(t, y, args):
    del t
    alpha, beta, gamma, delta = args
    prey, predator = y[0], y[1]
    return jnp.stack(
        [
            alpha * prey - beta * prey * predator,
            -gamma * predator + delta * prey * predator,
        ]
    )


def _pendulum(t, y, args):
    del t
    omega_squared = args  # g / L
    theta, omega = y[0], y[1]
    return jnp.stack([omega, -omega_squared * jnp.sin(theta)])


def _arenstorf(t, y, args):
    # The restricted three-body problem in a frame rotating with the two heavy
    # bodies, of masses `1 - mu` at (-mu, 0) and `mu` at (1 - mu, 0).
    del t
    mu = args
    mu_hat = 1 - mu
    x, v, dx, dv = y[0], y[1], y[2], y[3]
    d1 = ((x + mu) ** 2 + v**2) ** 1.5
    d2 = ((x - mu_hat) ** 2 + v**2) ** 1.5
    ddx = x + 2 * dv - mu_hat * (x + mu) / d1 - mu * (x - mu_hat) / d2
    ddv = v - 2 * dx - mu_hat * v / d1 - mu * v / d2
    return jnp.stack([dx, dv, ddx, ddv])


def _pleiades(t, y, args):
    # State: x_1..x_7, y_1..y_7, x'_1..x'_7, y'_1..y'_7. Body i accelerates at
    # sum_{j != i} m_j (r_j - r_i) / |r_j - r_i|^3 (gravitational constant 1).
    del t
    masses = jnp.asarray(args, dtype=y.dtype)
    n = masses.shape[0]
    px, py = y[:n], y[n : 2 * n]
    dx = px[None, :] - px[:, None]  # [i, j] = x_j - x_i
    dy = py[None, :] - py[:, None]
    distance_squared = dx**2 + dy**2
    same = jnp.eye(n, dtype=bool)
    # The diagonal is 0/0; make it 0 * finite, so that it also has zero gradient.
    cubed = jnp.where(same, 1, distance_squared) ** 1.5
    weight = jnp.where(same, 0, masses[None, :] / cubed)
    ddx = jnp.sum(weight * dx, axis=1)
    ddy = jnp.sum(weight * dy, axis=1)
    return jnp.concatenate([y[2 * n :], ddx, ddy])


# Reference values: unless said otherwise, computed once, offline, with float64
# SciPy 1.17.1:
#   scipy.integrate.solve_ivp(jax.jit(problem.f), (problem.t0, problem.t1),
#                             numpy.asarray(problem.initial_values),
#                             args=(problem.args,), method="DOP853",
#                             rtol=1e-13, atol=1e-13)
# and printed with repr(float). A solve at rtol = atol = 2.5e-14 agrees with them
# to the difference noted at each problem. tests/test_problems.py recomputes them.
_SCIPY = "scipy solve_ivp(method='DOP853', rtol=1e-13, atol=1e-13)"

LORENZ = Problem(
    name="lorenz",
    description="Lorenz system (sigma=10, rho=28, beta=8/3): chaotic, 3 states",
    f=_lorenz,
    initial_values=(1.0, 1.0, 1.0),
    t0=0.0,
    t1=1.0,
    args=(10.0, 28.0, 8.0 / 3.0),
    rtol=1e-8,
    atol=1e-8,
    labels=("x", "y", "z"),
    phase_portraits=((0, 2),),
    # A solve at rtol = atol = 2.5e-14 differs by 3e-13 (max-norm).
    reference_values=(-9.37857001092537, -8.357033788427001, 29.362325337363753),
    reference_source=_SCIPY,
)

VAN_DER_POL = Problem(
    name="van_der_pol",
    description="Van der Pol oscillator (mu=1, not stiff): a limit cycle, 2 states",
    f=_van_der_pol,
    initial_values=(2.0, 0.0),
    t0=0.0,
    t1=20.0,
    args=1.0,
    rtol=1e-8,
    atol=1e-8,
    labels=("x", "dx/dt"),
    phase_portraits=((0, 1),),
    # A solve at rtol = atol = 2.5e-14 differs by 5e-14 (max-norm).
    reference_values=(2.0081497621749387, -0.042508875273142066),
    reference_source=_SCIPY,
)

LOTKA_VOLTERRA = Problem(
    name="lotka_volterra",
    description="Lotka-Volterra predator-prey model (1.5, 1, 3, 1): periodic, 2 states",
    f=_lotka_volterra,
    initial_values=(1.0, 1.0),
    t0=0.0,
    t1=10.0,
    args=(1.5, 1.0, 3.0, 1.0),
    rtol=1e-8,
    atol=1e-8,
    labels=("prey", "predator"),
    phase_portraits=((0, 1),),
    # A solve at rtol = atol = 2.5e-14 differs by 2e-13 (max-norm).
    reference_values=(1.0263447675750297, 0.9096910781362734),
    reference_source=_SCIPY,
)

PENDULUM = Problem(
    name="pendulum",
    description="Nonlinear pendulum (g/L=1) released at rest from 2.5 rad, 2 states",
    f=_pendulum,
    initial_values=(2.5, 0.0),
    t0=0.0,
    t1=10.0,
    args=1.0,
    rtol=1e-8,
    atol=1e-8,
    labels=("theta", "omega"),
    phase_portraits=((0, 1),),
    # A solve at rtol = atol = 2.5e-14 differs by 1e-13 (max-norm).
    reference_values=(2.4685320486385587, 0.19609288936548927),
    reference_source=_SCIPY,
)

# Hairer, Nørsett & Wanner, Solving ODEs I (2nd ed.), section II.0: a periodic
# orbit of the restricted three-body problem; its period and initial values as
# printed there. After one period the state returns to y0, which is the reference.
ARENSTORF_PERIOD = 17.0652165601579625588917206249
ARENSTORF = Problem(
    name="arenstorf",
    description="Arenstorf orbit (restricted three-body problem): one period, 4 states",
    f=_arenstorf,
    initial_values=(0.994, 0.0, 0.0, -2.00158510637908252240537862224),
    t0=0.0,
    t1=ARENSTORF_PERIOD,
    args=0.012277471,
    rtol=1e-10,
    atol=1e-10,
    labels=("x", "y", "dx/dt", "dy/dt"),
    phase_portraits=((0, 1),),
    reference_values=(0.994, 0.0, 0.0, -2.00158510637908252240537862224),
    reference_source="periodic orbit: y(T) = y0 (Hairer, Nørsett & Wanner)",
)

# Hairer, Nørsett & Wanner, Solving ODEs I, section II.10: seven stars in the
# plane, of masses 1, ..., 7, with close encounters near t = 1.23 and t = 1.28.
PLEIADES = Problem(
    name="pleiades",
    description="Pleiades: 7 bodies in the plane (Hairer et al.), 28 states",
    f=_pleiades,
    initial_values=(
        *(3.0, 3.0, -1.0, -3.0, 2.0, -2.0, 2.0),  # x
        *(3.0, -3.0, 2.0, 0.0, 0.0, -4.0, 4.0),  # y
        *(0.0, 0.0, 0.0, 0.0, 0.0, 1.75, -1.5),  # dx/dt
        *(0.0, 0.0, 0.0, -1.25, 1.0, 0.0, 0.0),  # dy/dt
    ),
    t0=0.0,
    t1=3.0,
    args=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0),
    rtol=1e-8,
    atol=1e-8,
    labels=tuple(f"{name}{i}" for name in ("x", "y", "vx", "vy") for i in range(1, 8)),
    phase_portraits=tuple((i, i + 7) for i in range(7)),
    # A solve at rtol = atol = 2.5e-14 differs by 9e-12 (max-norm).
    reference_values=(
        # x
        *(0.37061391438828895, 3.2372840920575476, -3.2225590324209183),
        *(0.6597091455789638, 0.34255817071697275, 1.5621721014008132),
        -0.7003092922209019,
        # y
        *(-3.94343758551371, -3.2713809739720996, 5.225081843446841),
        *(-2.590612434977734, 1.1982136933947574, -0.24296823449382315),
        1.0914492404310612,
        # dx/dt
        *(3.417003806300127, 1.354584501625814, -2.590065597809723),
        *(2.0250537347175865, -1.1558151001568087, -0.8072988170214107),
        0.5952396354170754,
        # dy/dt
        *(-3.7412449612395284, 0.3773459685756016, 0.9386858869466926),
        *(0.36679222272144174, -0.34740463537669164, 2.3449154481805405),
        -1.9470204342624762,
    ),
    reference_source=_SCIPY,
)

PROBLEMS: dict[str, Problem] = {
    problem.name: problem
    for problem in (
        LORENZ,
        VAN_DER_POL,
        LOTKA_VOLTERRA,
        PENDULUM,
        ARENSTORF,
        PLEIADES,
        ROBER,
        HIRES,
        OREGO,
        VDPOL,
        E5,
        POLLU,
        BRUSSELATOR,
    )
}


def get_problem(name: str) -> Problem:
    """The problem called `name` (case and `-`/`_` do not matter); see `PROBLEMS`."""
    key = name.strip().lower().replace("-", "_")
    try:
        return PROBLEMS[key]
    except KeyError:
        valid = ", ".join(PROBLEMS)
        raise ValueError(f"Unknown problem {name!r}; valid names: {valid}.") from None
