"""Diagonally implicit Runge–Kutta methods (DIRK, SDIRK, ESDIRK) driven by a
Butcher tableau with a diagonal (`ButcherTableau.a_diagonal`).

Stage `i` solves `k_i = h f(t0 + c_i h, y0 + sum_{j<i} a_ij k_j + a_ii k_i)`
for its increment `k_i` with the solver's `optimistix` root finder, from the
guess `sum_{j<i} p_ij k_j` (`a_predictor`; by default the previous stage's
increment). The stages after the first run in a `lax.scan`, so the vector field
and the root finder are traced once whatever the number of stages (compile
time). A stage equation that fails makes the error estimate infinite and
returns its `RESULTS` code (see `implicit.solve_stage`).

Not yet here (issue 14): the Jacobian computed once per step and reused across
its stages and across steps; for now each stage's root finder (`optimistix.Chord`
by default) computes it at its initial guess.
"""

from typing import ClassVar

import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interpolation import ThirdOrderHermitePolynomialInterpolation
from .._misc import tree_add
from .._results import RESULTS
from .._term import AbstractTerm
from .base import AbstractImplicitSolver
from .butcher import ButcherTableau
from .implicit import check_linearisable, failed_error, solve_stage
from .runge_kutta import AbstractRungeKutta


def _predictor(tableau: ButcherTableau) -> np.ndarray:
    """The `(s, s)` strictly lower-triangular matrix of initial guesses."""
    s = tableau.num_stages
    p = np.zeros((s, s))
    if tableau.a_predictor is None:
        for i in range(1, s):
            p[i, i - 1] = 1.0
    else:
        for i, row in enumerate(tableau.a_predictor):
            p[i + 1, : i + 1] = row
    return p


def _combine(weights, ks, like):
    """`sum_j weights[j] ks[j]` for every leaf (stage axis first)."""
    return jtu.tree_map(
        lambda k, y: jnp.tensordot(jnp.asarray(weights).astype(k.dtype), k, 1).astype(
            y.dtype
        ),
        ks,
        like,
    )


class AbstractDIRK(AbstractRungeKutta, AbstractImplicitSolver):
    """A diagonally implicit Runge–Kutta method defined by its class variable
    `tableau` (with `a_diagonal`), for stiff problems. A new method is a
    subclass that sets `tableau`, `order` and the fields `root_finder` and
    `root_find_max_steps`; see `Kvaerno3`.

    Dense output is the cubic Hermite interpolant between the step's ends, with
    the first and last stages as end slopes (exact for the stiffly accurate
    methods here, whose last stage is evaluated at `(t1, y1)`).
    """

    interpolation_cls: ClassVar = ThirdOrderHermitePolynomialInterpolation.from_k

    def init(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> None:
        del terms, t0, t1, y0, args
        return None

    def step(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: None,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y, DenseInfo, None, RESULTS]:
        del solver_state, made_jump
        check_linearisable(terms, t0, y0, args)
        tableau = self.tableau
        assert tableau.b_error is not None, "a DIRK method needs an error estimate"
        s = tableau.num_stages
        control = terms.contr(t0, t1)
        h = jnp.subtract(t1, t0)
        nodes = tableau.nodes()
        diagonal = np.zeros(s) if tableau.a_diagonal is None else tableau.a_diagonal
        a, p = tableau.a_matrix(), _predictor(tableau)

        def increment(t, y):
            return terms.prod(terms.vf(t, y, args), control)

        def implicit_stage(t, base, d, guess):
            def residual(k, _):
                y = jtu.tree_map(lambda b, x: b + d.astype(x.dtype) * x, base, k)
                return jtu.tree_map(jnp.subtract, k, increment(t, y))

            return solve_stage(
                residual, guess, self.root_finder, self.root_find_max_steps
            )

        t_first = t0 + jnp.asarray(nodes[0], jnp.result_type(h)) * h
        k_first = increment(t_first, y0)
        result = RESULTS.successful
        if diagonal[0] != 0:  # an SDIRK: the first stage is implicit too
            d0 = jnp.asarray(diagonal[0], jnp.result_type(h))
            k_first, result = implicit_stage(t_first, y0, d0, k_first)
        ks = jtu.tree_map(
            lambda k: jnp.zeros((s, *jnp.shape(k)), jnp.result_type(k)).at[0].set(k),
            k_first,
        )

        def stage(carry, xs):
            ks, code = carry
            i, a_row, d, p_row, node = xs
            base = tree_add(y0, _combine(a_row, ks, y0))
            k, found = implicit_stage(t0 + node * h, base, d, _combine(p_row, ks, y0))
            ks = jtu.tree_map(lambda b, x: b.at[i].set(x), ks, k)
            code = jnp.where(code == 0, found.value, code)
            return (ks, code), None

        time_dtype = jnp.result_type(h)
        xs = (
            np.arange(1, s),
            np.asarray(a[1:]),
            np.asarray(diagonal[1:], dtype=time_dtype),
            np.asarray(p[1:]),
            np.asarray(nodes[1:], dtype=time_dtype),
        )
        (ks, code), _ = lax.scan(stage, (ks, result.value), xs)
        result = RESULTS(code)
        y1 = tree_add(y0, _combine(tableau.b_sol, ks, y0))
        y_error = failed_error(_combine(tableau.b_error, ks, y0), result)
        dense_info = dict(y0=y0, y1=y1, k=ks)
        return y1, y_error, dense_info, None, result

    def func(self, terms: AbstractTerm, t0: RealScalarLike, y0: Y, args: Args) -> VF:
        return terms.vf(t0, y0, args)


class AbstractSDIRK(AbstractDIRK):
    """A singly diagonally implicit method: every diagonal entry of the tableau
    is the same non-zero `gamma`."""

    def __check_init__(self):
        diagonal = self.tableau.a_diagonal
        if diagonal is None or diagonal[0] == 0 or np.any(diagonal != diagonal[0]):
            raise ValueError("An SDIRK tableau has one non-zero value on its diagonal.")


class AbstractESDIRK(AbstractDIRK):
    """A singly diagonally implicit method with an explicit first stage: the
    diagonal is `(0, gamma, ..., gamma)`."""

    def __check_init__(self):
        diagonal = self.tableau.a_diagonal
        if (
            diagonal is None
            or diagonal[0] != 0
            or diagonal[1] == 0
            or np.any(diagonal[1:] != diagonal[1])
        ):
            raise ValueError(
                "An ESDIRK tableau's diagonal is (0, gamma, ..., gamma), gamma != 0."
            )
