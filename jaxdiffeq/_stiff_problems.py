"""The stiff problems of `jaxdiffeq.problems`: six from the Bari test set, with
their published reference solutions, and a 2-D Brusselator of any size.

Source of the first six (equations, intervals, initial values and the reference
solutions at `t1`, computed there with RADAU5 in extended precision): F. Mazzia
and C. Magherini, *Test Set for Initial Value Problem Solvers*, release 2.4,
University of Bari (2008). The vector fields are written from the equations
in that report.
"""

import jax.numpy as jnp
import numpy as np

from ._problem import Problem

_BARI = "Mazzia & Magherini, Test Set for IVP Solvers, release 2.4 (Bari, 2008)"


def _rober(t, y, args):
    del t
    k1, k2, k3 = args
    y1, y2, y3 = y[0], y[1], y[2]
    fast = k2 * y2**2
    exchange = k3 * y2 * y3
    return jnp.stack([-k1 * y1 + exchange, k1 * y1 - exchange - fast, fast])


def _hires(t, y, args):
    del t, args
    y1, y2, y3, y4, y5, y6, y7, y8 = (y[i] for i in range(8))
    binding = 280 * y6 * y8
    return jnp.stack(
        [
            -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
            1.71 * y1 - 8.75 * y2,
            -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
            8.32 * y2 + 1.71 * y3 - 1.12 * y4,
            -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
            -binding + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
            binding - 1.81 * y7,
            -binding + 1.81 * y7,
        ]
    )


def _orego(t, y, args):
    # The Oregonator (Field–Noyes model of the Belousov–Zhabotinsky reaction).
    del t
    s, w, q = args
    y1, y2, y3 = y[0], y[1], y[2]
    return jnp.stack(
        [
            s * (y2 - y1 * y2 + y1 - q * y1**2),
            (-y2 - y1 * y2 + y3) / s,
            w * (y1 - y3),
        ]
    )


def _vdpol(t, y, args):
    # Van der Pol in the scaled time of the test set: y2 is O(1) on the slow
    # branches, and the jumps take O(epsilon) time.
    del t
    epsilon = args
    y1, y2 = y[0], y[1]
    return jnp.stack([y2, ((1 - y1**2) * y2 - y1) / epsilon])


def _e5(t, y, args):
    # Chemical pyrolysis; y3 - y2 + y4 is constant (zero).
    del t
    a, b, c, m = args
    y1, y2, y3, y4 = y[0], y[1], y[2], y[3]
    r1, r2, r3, r4 = a * y1, b * y1 * y3, m * c * y2 * y3, c * y4
    return jnp.stack([-r1 - r2, r1 - r3, r1 - r2 - r3 + r4, r2 - r4])


# POLLU: 25 reactions among 20 species of an air-pollution model (Verwer). For
# each reaction, its rate constant and the species whose concentrations it
# multiplies (indices from 0); then, for each species, the reactions that
# produce it (a reaction listed twice produces two) and those that consume it.
_POLLU_RATES = (
    (0.35, (0,)),
    (0.266e2, (1, 3)),
    (0.123e5, (4, 1)),
    (0.86e-3, (6,)),
    (0.82e-3, (6,)),
    (0.15e5, (6, 5)),
    (0.13e-3, (8,)),
    (0.24e5, (8, 5)),
    (0.165e5, (10, 1)),
    (0.9e4, (10, 0)),
    (0.22e-1, (12,)),
    (0.12e5, (9, 1)),
    (0.188e1, (13,)),
    (0.163e5, (0, 5)),
    (0.48e7, (2,)),
    (0.35e-3, (3,)),
    (0.175e-1, (3,)),
    (0.1e9, (15,)),
    (0.444e12, (15,)),
    (0.124e4, (16, 5)),
    (0.21e1, (18,)),
    (0.578e1, (18,)),
    (0.474e-1, (0, 3)),
    (0.178e4, (18, 0)),
    (0.312e1, (19,)),
)
# (produced by, consumed by), reactions numbered from 0.
_POLLU_SPECIES = (
    ((1, 2, 8, 10, 11, 21, 24), (0, 9, 13, 22, 23)),
    ((0, 20), (1, 2, 8, 11)),
    ((0, 16, 18, 21), (14,)),
    ((14,), (1, 15, 16, 22)),
    ((3, 3, 5, 6, 12, 19), (2,)),
    ((2, 17, 17), (5, 7, 13, 19)),
    ((12,), (3, 4, 5)),
    ((3, 4, 5, 6), ()),
    ((), (6, 7)),
    ((6, 8), (11,)),
    ((7, 10), (8, 9)),
    ((8,), ()),
    ((9,), (10,)),
    ((11,), (12,)),
    ((13,), ()),
    ((15,), (17, 18)),
    ((), (19,)),
    ((19,), ()),
    ((22, 24), (20, 21, 23)),
    ((23,), (24,)),
)


def _stoichiometry() -> np.ndarray:
    """`S[i, r]`: how many of species `i` reaction `r` makes (negative: uses)."""
    s = np.zeros((len(_POLLU_SPECIES), len(_POLLU_RATES)))
    for i, (produced, consumed) in enumerate(_POLLU_SPECIES):
        for r in produced:
            s[i, r] += 1
        for r in consumed:
            s[i, r] -= 1
    return s


_POLLU_S = _stoichiometry()


def _pollu(t, y, args):
    del t, args
    rates = jnp.stack(
        [
            k * jnp.prod(jnp.stack([y[i] for i in species]))
            for k, species in _POLLU_RATES
        ]
    )
    return jnp.asarray(_POLLU_S, dtype=y.dtype) @ rates


ROBER = Problem(
    name="rober",
    description="Robertson's chemical kinetics on [0, 1e11] (stiff), 3 states",
    f=_rober,
    initial_values=(1.0, 0.0, 0.0),
    t0=0.0,
    t1=1e11,
    args=(0.04, 3e7, 1e4),
    rtol=1e-6,
    atol=1e-10,
    labels=("y1", "y2", "y3"),
    phase_portraits=(),
    reference_values=(
        0.2083340149701255e-07,
        0.8333360770334713e-13,
        0.9999999791665050,
    ),
    reference_source=_BARI,
    stiff=True,
)

HIRES = Problem(
    name="hires",
    description="HIRES: plant physiology, light-induced growth (stiff), 8 states",
    f=_hires,
    initial_values=(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057),
    t0=0.0,
    t1=321.8122,
    args=None,
    rtol=1e-6,
    atol=1e-10,
    labels=tuple(f"y{i}" for i in range(1, 9)),
    phase_portraits=(),
    reference_values=(
        *(0.7371312573325668e-3, 0.1442485726316185e-3, 0.5888729740967575e-4),
        *(0.1175651343283149e-2, 0.2386356198831331e-2, 0.6238968252742796e-2),
        *(0.2849998395185769e-2, 0.2850001604814231e-2),
    ),
    reference_source=_BARI,
    stiff=True,
)

OREGO = Problem(
    name="orego",
    description="Oregonator: the Belousov-Zhabotinsky reaction (stiff), 3 states",
    f=_orego,
    initial_values=(1.0, 2.0, 3.0),
    t0=0.0,
    t1=360.0,
    args=(77.27, 0.161, 8.375e-6),
    rtol=1e-6,
    atol=1e-6,
    labels=("y1", "y2", "y3"),
    phase_portraits=((0, 2),),
    reference_values=(0.1000814870318523e1, 0.1228178521549917e4, 0.1320554942846706e3),
    reference_source=_BARI,
    stiff=True,
)

VDPOL = Problem(
    name="vdpol",
    description="Van der Pol, epsilon = 1e-6 in scaled time (stiff), 2 states",
    f=_vdpol,
    initial_values=(2.0, 0.0),
    t0=0.0,
    t1=2.0,
    args=1e-6,
    rtol=1e-6,
    atol=1e-6,
    labels=("y1", "y2"),
    phase_portraits=((0, 1),),
    reference_values=(0.1706167732170483e1, -0.8928097010247975e0),
    reference_source=_BARI,
    stiff=True,
)

E5 = Problem(
    name="e5",
    description="E5: chemical pyrolysis on [0, 1e13] (stiff, tiny values), 4 states",
    f=_e5,
    initial_values=(1.76e-3, 0.0, 0.0, 0.0),
    t0=0.0,
    t1=1e13,
    args=(7.89e-10, 1.1e7, 1.13e3, 1e6),
    rtol=1e-6,
    # The test set's absolute tolerance: the solution's components fall to
    # 1e-22 and below, so only a tiny `atol` resolves them.
    atol=1.1e-24,
    labels=("y1", "y2", "y3", "y4"),
    phase_portraits=(),
    reference_values=(
        0.1152903278711829e-290,
        0.8867655517642120e-22,
        0.8854814626268838e-22,
        0.0,
    ),
    reference_source=_BARI,
    stiff=True,
)

POLLU = Problem(
    name="pollu",
    description="POLLU: air pollution, 25 reactions among 20 species (stiff)",
    f=_pollu,
    initial_values=(
        *(0.0, 0.2, 0.0, 0.04, 0.0, 0.0, 0.1, 0.3, 0.01, 0.0),
        *(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.007, 0.0, 0.0, 0.0),
    ),
    t0=0.0,
    t1=60.0,
    args=None,
    rtol=1e-6,
    atol=1e-10,
    labels=tuple(f"y{i}" for i in range(1, 21)),
    phase_portraits=(),
    reference_values=(
        *(0.5646255480022769e-01, 0.1342484130422339, 0.4139734331099427e-08),
        *(0.5523140207484359e-02, 0.2018977262302196e-06, 0.1464541863493966e-06),
        *(0.7784249118997964e-01, 0.3245075353396018, 0.7494013383880406e-02),
        *(0.1622293157301561e-07, 0.1135863833257075e-07, 0.2230505975721359e-02),
        *(0.2087162882798630e-03, 0.1396921016840158e-04, 0.8964884856898295e-02),
        *(0.4352846369330103e-17, 0.6899219696263405e-02, 0.1007803037365946e-03),
        *(0.1772146513969984e-05, 0.5682943292316392e-04),
    ),
    reference_source=_BARI,
    stiff=True,
)


def _brusselator_initial(n: int) -> np.ndarray:
    grid = np.arange(n) / n
    x, y = np.meshgrid(grid, grid, indexing="ij")
    u = 22 * (y * (1 - y)) ** 1.5
    v = 27 * (x * (1 - x)) ** 1.5
    return np.concatenate([u.ravel(), v.ravel()])


class _Brusselator:
    """The 2-D Brusselator's vector field on an `n x n` periodic grid; the state
    is `u` then `v`, each flattened in `(x, y)` order. A class, not a closure, so
    that equal sizes give equal (hashable) vector fields."""

    def __init__(self, n: int):
        self.n = n
        grid = np.arange(n) / n
        x, y = np.meshgrid(grid, grid, indexing="ij")
        self.spot = ((x - 0.3) ** 2 + (y - 0.6) ** 2 <= 0.1**2).ravel()

    def __eq__(self, other):
        return isinstance(other, _Brusselator) and other.n == self.n

    def __hash__(self):
        return hash((_Brusselator, self.n))

    def _laplacian(self, w):
        w = w.reshape(self.n, self.n)
        around = (
            jnp.roll(w, 1, 0)
            + jnp.roll(w, -1, 0)
            + jnp.roll(w, 1, 1)
            + jnp.roll(w, -1, 1)
        )
        return ((around - 4 * w) * self.n**2).ravel()

    def __call__(self, t, y, args):
        alpha = args
        m = self.n * self.n
        u, v = y[:m], y[m:]
        forcing = jnp.where((t >= 1.1) & jnp.asarray(self.spot), 5.0, 0.0).astype(
            y.dtype
        )
        reaction = u * u * v
        du = 1 + reaction - 4.4 * u + alpha * self._laplacian(u) + forcing
        dv = 3.4 * u - reaction + alpha * self._laplacian(v)
        return jnp.concatenate([du, dv])


def brusselator_2d(n: int = 16) -> Problem:
    """The 2-D Brusselator of Hairer & Wanner (*Solving ODEs II*, 2nd ed., section
    IV.10) on an `n x n` periodic grid of the unit square: `2 n^2` states, stiff
    through the diffusion (eigenvalues down to about `-8 alpha n^2`).

    `u_t = 1 + u^2 v - 4.4 u + alpha Laplace(u) + f(x, y, t)`,
    `v_t = 3.4 u - u^2 v + alpha Laplace(v)`, `alpha = 0.1`, with `f = 5` in the
    disc of radius 0.1 about (0.3, 0.6) from `t = 1.1` on (a jump in time), and
    `u = 22 (y (1 - y))^1.5`, `v = 27 (x (1 - x))^1.5` at `t = 0`; `t` in
    `[0, 11.5]`. The Laplacian is the 5-point stencil. No reference solution."""
    if not isinstance(n, int) or n < 3:
        raise ValueError(f"`n` must be an integer of at least 3, not {n!r}.")
    cells = [f"{i},{j}" for i in range(n) for j in range(n)]
    return Problem(
        name="brusselator" if n == 16 else f"brusselator_{n}",
        description=f"2-D Brusselator on a {n}x{n} periodic grid (stiff), "
        f"{2 * n * n} states",
        f=_Brusselator(n),
        initial_values=tuple(float(x) for x in _brusselator_initial(n)),
        t0=0.0,
        t1=11.5,
        args=0.1,
        rtol=1e-6,
        atol=1e-6,
        labels=tuple(f"u[{c}]" for c in cells) + tuple(f"v[{c}]" for c in cells),
        phase_portraits=(),
        reference_values=None,
        reference_source="none",
        stiff=True,
    )


BRUSSELATOR = brusselator_2d(16)
