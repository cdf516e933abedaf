"""Steinebach's Rodas5P, a Rosenbrock–Wanner method of order 5."""

from typing import ClassVar

import numpy as np

from .._term import AbstractTerm
from .butcher import lower_triangular
from .rosenbrock import AbstractRosenbrock, RosenbrockTableau

# Coefficients: G. Steinebach, "Construction of Rosenbrock–Wanner method Rodas5P
# and numerical benchmarks within the Julia Differential Equations package",
# BIT Numerical Mathematics 63 (2023), article 27, in the W-form of Hairer and
# Wanner (transformed `a` and `C`), as published with the method. Stages 6 to 8
# are evaluated at t1 and each adds its increment to the last (stiffly
# accurate): y1 = U_8 + k_8, and k_8 is the error estimate (embedded order 4).
_GAMMA = 0.21193756319429014
_A6 = [
    -7.502846399306121,
    2.561846144803919,
    -11.627539656261098,
    -0.18268767659942256,
    0.030198172008377946,
]
_A_ROWS = [
    [],
    [3.0],
    [2.849394379747939, 0.45842242204463923],
    [-6.954028509809101, 2.489845061869568, -10.358996098473584],
    [
        2.8029986275628964,
        0.5072464736228206,
        -0.3988312541770524,
        -0.04721187230404641,
    ],
    _A6,
    [*_A6, 1.0],
    [*_A6, 1.0, 1.0],
]
_C_ROWS = [
    [],
    [-14.155112264123755],
    [-17.97296035885952, -2.859693295451294],
    [147.12150275711716, -1.41221402718213, 71.68940251302358],
    [165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306],
    [
        24.854864614690072,
        -3.0009227002832186,
        47.4931110020768,
        5.5814197821558125,
        -0.6610691825249471,
    ],
    [
        30.91273214028599,
        -3.1208243349937974,
        77.79954646070892,
        34.28646028294783,
        -19.097331116725623,
        -28.087943162872662,
    ],
    [
        37.80277123390563,
        -3.2571969029072276,
        112.26918849496327,
        66.9347231244047,
        -40.06618937091002,
        -54.66780262877968,
        -9.48861652309627,
    ],
]
# The three rows that give the coefficients of the order-4 dense output.
_DENSE = [
    [
        25.948786856663858,
        -2.5579724845846235,
        10.433815404888879,
        -2.3679251022685204,
        0.524948541321073,
        1.1241088310450404,
        0.4272876194431874,
        -0.17202221070155493,
    ],
    [
        -9.91568850695171,
        -0.9689944594115154,
        3.0438037242978453,
        -24.495224566215796,
        20.176138334709044,
        15.98066361424651,
        -6.789040303419874,
        -6.710236069923372,
    ],
    [
        11.419903575922262,
        2.8879645146136994,
        72.92137995996029,
        80.12511834622643,
        -52.072871366152654,
        -59.78993625266729,
        -0.15582684282751913,
        4.883087185713722,
    ],
]


_tableau = RosenbrockTableau(
    gamma=_GAMMA,
    a=lower_triangular(_A_ROWS),
    C=lower_triangular(_C_ROWS),
    c=np.array(
        [
            0.0,
            0.6358126895828704,
            0.4095798393397535,
            0.9769306725060716,
            0.4288403609558664,
            1.0,
            1.0,
            1.0,
        ]
    ),
    d=np.array(
        [
            _GAMMA,
            -0.42387512638858027,
            -0.3384627126235924,
            1.8046452872882734,
            2.325825639765069,
            0.0,
            0.0,
            0.0,
        ]
    ),
    b_sol=np.array([*_A6, 1.0, 1.0, 1.0]),
    b_error=np.array([0.0] * 7 + [1.0]),
    dense=np.array(_DENSE),
)


class Rodas5P(AbstractRosenbrock):
    """Steinebach's Rodas5P: a Rosenbrock–Wanner method of order 5 with an
    embedded order-4 error estimate, 8 stages, stiffly accurate, with an
    order-4 dense output, for stiff ODEs. Each step computes the Jacobian (and,
    for non-autonomous problems, the time derivative) once, factorises one
    matrix and solves 8 linear systems with it: no Newton iteration, so no
    convergence failures to retry, which makes it fast on small and medium
    stiff systems at moderate tolerances. Not in Diffrax.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -1000.0 * (y - jnp.cos(t)))
    sol = jd.diffeqsolve(term, jd.Rodas5P(), 0.0, 1.0, 0.01, jnp.array(0.0),
                         stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8))
    ```

    **Arguments:** `linear_solver` (see `AbstractRosenbrock`).

    The Jacobian must be exact (a Rosenbrock method's order depends on it):
    it is computed with `jax.jacfwd`, so the vector field must be
    differentiable. Reference: G. Steinebach, BIT Numerical Mathematics 63
    (2023), 27.
    """

    tableau: ClassVar[RosenbrockTableau] = _tableau

    def order(self, terms: AbstractTerm) -> int:
        del terms
        return 5
