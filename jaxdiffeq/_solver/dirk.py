"""Diagonally implicit Runge–Kutta methods (DIRK, SDIRK, ESDIRK) and their
implicit–explicit (IMEX) form, driven by a Butcher tableau with a diagonal
(`ButcherTableau.a_diagonal`), or a `MultiButcherTableau` for IMEX.

The step works on the flattened state (`jax.flatten_util.ravel_pytree`): the
stage equations' matrices are dense `n x n` ones. How a stage equation is
solved depends on the root finder:

* `VeryChord` with a dense linear solver (the default): the Jacobian and the
  factorisation of `I - gamma h J` live in the solver state and are reused
  across stages and steps (`newton_matrix.py` says when they are remade); a
  chord iteration that fails with a kept Jacobian remakes it and retries the
  step before it is rejected.
* with another `lineax` solver (say the Jacobian-free `lineax.GMRES`), or any
  other `optimistix` root finder: the root finder is called on each stage from
  its guess and linearises there itself. (A linearisation made once per step
  cannot be handed to it: `optimistix.root_find` differentiates through its
  `options`, and a `jax.linearize` closure is not an array.)

A stage equation that fails makes the error estimate infinite and returns its
`RESULTS` code (see `implicit.solve_stage`).
"""

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interpolation import (
    AbstractStagePolynomialInterpolation,
    ThirdOrderHermitePolynomialInterpolation,
)
from .._results import RESULTS
from .._root_finder import default_root_finder
from .._term import AbstractTerm, MultiTerm, scales_by_control
from .._verychord import REPLAY_MAX_STEPS, VeryChord
from . import newton_matrix as nm
from .base import AbstractImplicitSolver
from .butcher import ButcherTableau, MultiButcherTableau
from .calculate_jacobian import CalculateJacobian
from .dirk_stages import Stages, combine, diagonal, run_stages
from .implicit import check_linearisable, failed_error, linearising
from .runge_kutta import AbstractRungeKutta
from .stage_root import FlatIncrement, stage_root


def _stiffly_accurate(tableau: ButcherTableau) -> bool:
    """Whether the last stage is evaluated at `(t1, y1)`."""
    return (
        tableau.nodes()[-1] == 1.0
        and np.allclose(tableau.a_matrix()[-1, :-1], tableau.b_sol[:-1], atol=1e-15)
        and np.isclose(diagonal(tableau)[-1], tableau.b_sol[-1], atol=1e-15)
    )


def _stage_replay(tape: Array | None, stage) -> Array | None:
    """Stage `stage`'s `replay_record` in `tape` (`None`: no tape)."""
    if tape is None:
        return None
    return lax.dynamic_index_in_dim(tape, stage, 0, keepdims=False)


def _jacobian_of(g: FlatIncrement, vector_field: bool) -> FlatIncrement:
    """What the Newton matrix keeps the Jacobian of (`NewtonMatrix`): the
    vector field (the increment over a step of size 1), or the increment `g`
    itself. The vector field's does not depend on the step size, which then
    enters only where the matrix is factorised: XLA does not compile a kernel
    to scale each new Jacobian by it (one for the Brusselator, whose vector
    field's Jacobian is assembled from two halves). Call it where the
    Jacobian is made, inside its conditional, where the 1 is a constant."""
    if not vector_field:
        return g
    return eqx.tree_at(lambda x: x.control, g, jnp.ones_like(jnp.asarray(g.control)))


def _keeps_vector_field_jacobian(cache, term: AbstractTerm) -> bool:
    """Whether the Newton matrix is the vector field's Jacobian (see
    `NewtonMatrix`): as the solver state says, or for a state that keeps none,
    as the term allows."""
    if not isinstance(cache, nm.NewtonMatrix):
        return scales_by_control(term)
    if cache.jac_h is None and not scales_by_control(term):
        raise ValueError(
            "This solver state keeps the Jacobian of an ODE term's vector field; "
            "it cannot be used for a term whose increment is not its control "
            "times its vector field. Start without `solver_state`."
        )
    return cache.jac_h is None


def _replayed_plan(plan: tuple[Array, Array], tape: Array | None):
    """`(new_jac, new_factor)` as recorded in `tape`'s last entry (`1 + new_jac
    + 2 new_factor`), where it holds one; else `plan`."""
    if tape is None:
        return plan
    recorded = tape[-1]
    code = recorded - 1
    forced = recorded > 0
    new_jac = jnp.where(forced, (code % 2) == 1, plan[0])
    new_factor = jnp.where(forced, code >= 2, plan[1])
    return new_jac, new_factor


class AbstractDIRK(AbstractRungeKutta, AbstractImplicitSolver):
    """A diagonally implicit Runge–Kutta method defined by its class variable
    `tableau` (a `ButcherTableau` with `a_diagonal`; a `MultiButcherTableau` for
    an IMEX method, whose terms are `MultiTerm(explicit_term, implicit_term)`),
    for stiff problems. A new method is a subclass that sets `tableau`, `order`,
    `calculate_jacobian` and the fields `root_finder` and `root_find_max_steps`;
    see `Kvaerno3`.

    **Arguments** (after `scan_kind`, as in Diffrax):

    - `root_finder`: an `optimistix` root finder for the stage equations;
      default `VeryChord` with the step-size controller's tolerances
      (`with_stepsize_controller_tols`).
    - `root_find_max_steps`: the most chord iterations of one stage equation
      (default 10).

    With the default root finder (`VeryChord`, dense LU) the Jacobian and its
    factorisation are kept in the solver state across steps and remade only when
    needed; `Solution.stats` reports `num_jacobians` and `num_factorisations`.
    Dense output is the cubic Hermite interpolant between the step's ends, or a
    polynomial in the stages where the method's `interpolation_cls` is an
    `AbstractStagePolynomialInterpolation` (the KenCarp methods).
    """

    interpolation_cls: ClassVar = ThirdOrderHermitePolynomialInterpolation.from_k
    calculate_jacobian: ClassVar[CalculateJacobian] = CalculateJacobian.every_stage
    keeps_state_on_reject: ClassVar[bool] = True

    root_finder: optx.AbstractRootFinder = eqx.field(
        default_factory=default_root_finder
    )
    root_find_max_steps: int = eqx.field(default=10, static=True)

    def _tableaus(self) -> tuple[ButcherTableau, ButcherTableau | None]:
        """(implicit, explicit or `None`)."""
        tableau = self.tableau
        if isinstance(tableau, MultiButcherTableau):
            explicit, implicit = tableau.tableaus
            return implicit, explicit
        return tableau, None

    def _split_terms(self, terms) -> tuple[AbstractTerm, AbstractTerm | None]:
        if self._tableaus()[1] is None:
            return terms, None
        if not isinstance(terms, MultiTerm) or len(terms.terms) != 2:
            raise TypeError(
                f"`{type(self).__name__}` is an implicit–explicit method: pass "
                "`terms=MultiTerm(explicit_term, implicit_term)`, the non-stiff "
                f"part first, the stiff one second (got {type(terms).__name__}). "
                "For a problem that is stiff as a whole use `Kvaerno5`."
            )
        explicit, implicit = terms.terms
        return implicit, explicit

    def _dense_from_stages(self) -> bool:
        """Whether the dense output is a polynomial in all the stage increments
        (an `AbstractStagePolynomialInterpolation`, as the KenCarp methods'),
        rather than the cubic Hermite between the step's ends."""
        cls = self.interpolation_cls
        return isinstance(cls, type) and issubclass(
            cls, AbstractStagePolynomialInterpolation
        )

    def _reuses(self) -> bool:
        """Whether the Newton matrix is kept across steps."""
        finder = self.root_finder
        return isinstance(finder, VeryChord) and isinstance(
            finder.linear_solver, (lx.AutoLinearSolver, lx.LU)
        )

    def _chord(self) -> VeryChord:
        """The root finder, where the Newton matrix is kept (`_reuses`)."""
        assert isinstance(self.root_finder, VeryChord)
        return self.root_finder

    def _gamma(self):
        """The diagonal entry of the kept Newton matrix (its first implicit
        stage's); `None` where each stage factorises its own (`every_stage`)."""
        if self.calculate_jacobian == CalculateJacobian.every_stage:
            return None
        return diagonal(self._tableaus()[0])[
            0 if self.calculate_jacobian == CalculateJacobian.first_stage else 1
        ]

    def init(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> nm.NewtonMatrix | nm.FreshCounts | None:
        del t1, args
        if not self._reuses():
            return None
        flat = ravel_pytree(y0)[0]
        if flat.size <= nm.ALWAYS_FRESH_SIZE:
            return nm.fresh_counts()
        time_dtype = jnp.result_type(t0)
        vector_field = scales_by_control(self._split_terms(terms)[0])
        solver = self._chord().linear_solver
        return nm.empty(flat.size, flat.dtype, time_dtype, solver, vector_field)

    def _solve(self, g, t, base, d, guess, init_state, replay):
        k, code, rate, record = stage_root(
            g,
            t,
            base,
            d,
            guess,
            self.root_finder,
            init_state,
            replay,
            max_steps=self.root_find_max_steps,
        )
        return k, code, rate > nm.SLOW_RATE, record

    def _per_stage(self, g, run, tape):
        def solve(t, base, d, guess, i):
            return self._solve(g, t, base, d, guess, None, _stage_replay(tape, i))

        return run(solve)

    def _attempt(self, cache: nm.NewtonMatrix, g, h, run, tape) -> Stages:
        finder = self._chord()
        gamma = self._gamma()
        op = None if gamma is None else nm.operator(cache, h, gamma)

        def solve(t, base, d, guess, i):
            if op is None:  # every stage factorises its own matrix
                init = finder.state_from(nm.operator(cache, h, d), guess)
            else:
                init = finder.state_from(op, guess, cache.factor)
            return self._solve(g, t, base, d, guess, init, _stage_replay(tape, i))

        stages = run(solve)
        code = jnp.where(
            cache.singular & (stages.code != 0), RESULTS.singular.value, stages.code
        )
        return stages._replace(code=code)

    def _cached(
        self, cache: nm.NewtonMatrix | nm.FreshCounts, g, t0, h, flat0, run, tape
    ) -> tuple[Stages, Any, Array]:
        """The stages with the kept Newton matrix, and the matrix for the next
        step. A small state (`ALWAYS_FRESH_SIZE`) makes both afresh at every
        step and keeps only their counts (`nm.FreshCounts`). Otherwise the
        matrix is remade as `nm.plan` says; a chord iteration that fails with a
        kept Jacobian marks the matrix for a retry (`retries`), which the step
        loop makes at the same step size, with a fresh Jacobian. (The retry
        inside the step, a second round of the stages, doubled the stages'
        code to compile: POLLU, 0.3 s of 1.9 s.)"""
        solver = self._chord().linear_solver
        gamma = self._gamma()
        vector_field = _keeps_vector_field_jacobian(cache, g.term)

        def jacobian():
            of = _jacobian_of(g, vector_field)
            with linearising():
                return jax.jacfwd(lambda v: of(t0, v))(lax.stop_gradient(flat0))

        if isinstance(cache, nm.FreshCounts):
            time_dtype = jnp.result_type(h)
            fresh = nm.made_afresh(
                flat0.size,
                flat0.dtype,
                time_dtype,
                jacobian(),
                h,
                gamma,
                solver,
                vector_field,
            )
            stages = self._attempt(fresh, g, h, run, tape)
            counts = nm.FreshCounts(
                num_jacobians=cache.num_jacobians + 1,
                num_factorisations=cache.num_factorisations + int(gamma is not None),
            )
            return stages, counts, jnp.zeros((), jnp.int32)
        need_jac, need_factor = _replayed_plan(nm.plan(cache, h), tape)
        cache = nm.refresh(cache, need_jac, need_factor, jacobian, h, gamma, solver)
        stages = self._attempt(cache, g, h, run, tape)
        cache = nm.after_step(cache, stages.slow, stages.code != 0, need_jac)
        plan = 1 + need_jac.astype(jnp.int32) + 2 * need_factor.astype(jnp.int32)
        return stages, cache, plan

    def retries(
        self, solver_state: nm.NewtonMatrix | nm.FreshCounts | None
    ) -> Array | None:
        """Whether the step just attempted failed with a kept Jacobian and is to
        be attempted again, at the same size, with a fresh one."""
        if isinstance(solver_state, nm.NewtonMatrix):
            return solver_state.retry
        return None

    def tape_width(self) -> int:
        """With `VeryChord`: one `replay_record` per stage and the Newton
        matrix's plan (see `step_with_tape`)."""
        if not isinstance(self.root_finder, VeryChord):
            return 0
        if self.root_find_max_steps > REPLAY_MAX_STEPS:  # beyond the record's range
            return 0
        return self._tableaus()[0].num_stages + 1

    def step(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: nm.NewtonMatrix | nm.FreshCounts | None,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y, DenseInfo, nm.NewtonMatrix | nm.FreshCounts | None, RESULTS]:
        out = self.step_with_tape(
            terms, t0, t1, y0, args, solver_state, made_jump, tape=None
        )
        return out[:5]

    def step_with_tape(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: nm.NewtonMatrix | nm.FreshCounts | None,
        made_jump: BoolScalarLike,
        tape: Array | None,
    ) -> tuple[
        Y, Y, DenseInfo, nm.NewtonMatrix | nm.FreshCounts | None, RESULTS, Array
    ]:
        """`step`, and how its decisions went: each stage's chord iteration
        (`replay_record`) and whether the Newton matrix was remade, as
        `tape_width()` int32s. Given such a `tape` from an earlier attempt of
        the same step (a recomputation), the step makes the same decisions
        instead of testing its tolerances again; 0 entries decide as usual."""
        del made_jump
        implicit, explicit = self._tableaus()
        term_i, term_e = self._split_terms(terms)
        if not self._reuses():  # else `_cached` linearises it (`linearising`)
            check_linearisable(term_i, t0, y0, args)
        assert implicit.b_error is not None, "a DIRK method needs an error estimate"
        flat0, unravel = ravel_pytree(y0)
        h = jnp.subtract(t1, t0)
        g_i = FlatIncrement(term_i, term_i.contr(t0, t1), args, unravel)
        g_e = None
        if term_e is not None:
            g_e = FlatIncrement(term_e, term_e.contr(t0, t1), args, unravel)

        def run(solve):
            return run_stages(implicit, explicit, g_i, g_e, solve, t0, h, flat0)

        plan = jnp.zeros((), jnp.int32)
        if solver_state is not None:
            stages, solver_state, plan = self._cached(
                solver_state, g_i, t0, h, flat0, run, tape
            )
        else:
            stages = self._per_stage(g_i, run, tape)
        result = RESULTS(stages.code)
        increment, error = combine(implicit, explicit, stages)
        y1_flat = flat0 + increment
        y_error = failed_error(unravel(error), result)
        y1 = unravel(y1_flat)
        dense_info = self._dense_info(stages, g_i, g_e, t1, y0, y1, y1_flat, unravel)
        tape_out = jnp.concatenate([stages.records, plan[None]])
        return y1, y_error, dense_info, solver_state, result, tape_out

    def _dense_info(self, stages: Stages, g_i, g_e, t1, y0, y1, y1_flat, unravel):
        implicit = self._tableaus()[0]
        if self._dense_from_stages():
            k = stages.k_implicit
            if stages.k_explicit is not None:
                k = k + stages.k_explicit
            return dict(y0=y0, y1=y1, k=jax.vmap(unravel)(k))
        k_first = stages.k_implicit[0]
        if g_e is None and _stiffly_accurate(implicit):
            k_last = stages.k_implicit[-1]
        else:
            k_last = g_i(t1, y1_flat)
        if g_e is not None:
            assert stages.k_explicit is not None
            k_first = k_first + stages.k_explicit[0]
            k_last = k_last + g_e(t1, y1_flat)
        k = jax.vmap(unravel)(jnp.stack([k_first, k_last]))
        return dict(y0=y0, y1=y1, k=k)

    def func(self, terms: AbstractTerm, t0: RealScalarLike, y0: Y, args: Args) -> VF:
        return terms.vf(t0, y0, args)

    def stats(
        self, solver_state: nm.NewtonMatrix | nm.FreshCounts | None
    ) -> dict[str, Any]:
        """`num_jacobians` and `num_factorisations` over the solve, with the
        default root finder (which keeps them in the solver state). A method
        whose stages factorise their own matrices (`every_stage`, e.g. `Sil3`)
        keeps no factorisation: its count is 0."""
        if not isinstance(solver_state, (nm.NewtonMatrix, nm.FreshCounts)):
            return {}
        return dict(
            num_jacobians=solver_state.num_jacobians,
            num_factorisations=solver_state.num_factorisations,
        )


class AbstractSDIRK(AbstractDIRK):
    """A singly diagonally implicit method: every diagonal entry of the tableau
    is the same non-zero `gamma`."""

    calculate_jacobian: ClassVar[CalculateJacobian] = CalculateJacobian.first_stage

    def __check_init__(self):
        d = self._tableaus()[0].a_diagonal
        if d is None or d[0] == 0 or np.any(d != d[0]):
            raise ValueError("An SDIRK tableau has one non-zero value on its diagonal.")


class AbstractESDIRK(AbstractDIRK):
    """A singly diagonally implicit method with an explicit first stage: the
    diagonal is `(0, gamma, ..., gamma)`."""

    calculate_jacobian: ClassVar[CalculateJacobian] = CalculateJacobian.second_stage

    def __check_init__(self):
        d = self._tableaus()[0].a_diagonal
        if d is None or d[0] != 0 or d[1] == 0 or np.any(d[1:] != d[1]):
            raise ValueError(
                "An ESDIRK tableau's diagonal is (0, gamma, ..., gamma), gamma != 0."
            )
