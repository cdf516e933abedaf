"""`VeryChord`: the chord method with a linearisation the caller may supply, so
that an implicit Runge–Kutta method computes (and factorises) the Jacobian once
for all the stages of a step, or keeps it across steps.

Why not `optimistix.Chord`: it always linearises at its initial point, in
`init`, and offers no way to pass a linearisation made elsewhere. `VeryChord`
is an `optimistix.AbstractRootFinder` (so `optimistix.root_find` drives it and
differentiates its root by the implicit function theorem) whose `init` returns
`options["init_state"]` when given one (Diffrax's convention; build it with
`VeryChord.state_from`). Its linear solves are `lineax`'s.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from jaxtyping import Array, PyTree, Scalar

# The contraction factor beyond which the iteration is taken to diverge. Not 1:
# from a poor initial guess (a large step) a chord iteration often grows before
# it contracts (ROBER with `Kvaerno5`: with 1, 852 steps, 429 of them rejected;
# with 2, 219 and 56).
DIVERGE = 2.0


class VeryChordState(eqx.Module):
    """The iteration's state: the linear operator with the linear solver's state
    for it (a factorisation), the point the iteration started from, the last
    correction and the sizes of the last two (scaled by the tolerances), whose
    ratio is the rate of convergence."""

    linear_state: tuple[lx.AbstractLinearOperator, PyTree]
    start: PyTree[Array]
    diff: PyTree[Array]
    diffsize: Scalar
    diffsize_prev: Scalar
    result: optx.RESULTS
    step: Array

    @property
    def rate(self) -> Scalar:
        """The last contraction factor `|dz_k| / |dz_{k-1}|` (0 after one
        iteration)."""
        return jnp.where(self.step >= 2, self.diffsize / self.diffsize_prev, 0.0)


def _stop_gradient(tree):
    """`lax.stop_gradient` on the arrays of `tree` (a linear solver's state may
    hold a closure, as `lineax.GMRES`'s does)."""
    dynamic, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(lax.stop_gradient(dynamic), static)


# `equinox` evaluates an enumeration's `promote` and `!=` at trace time
# (`jax.ensure_compile_time_eval`): on a constant item, as lineax's LU returns
# and as the initial state holds, each of their few operations then compiles a
# tiny XLA program of its own, 0.14 s of the 0.3 s it took to trace a
# `Kvaerno5` solve (ROBER, fresh process). Under `jax.jit` they are traced like
# any other operation.
@jax.jit
def _promoted(linear_result: lx.RESULTS) -> optx.RESULTS:
    return optx.RESULTS.promote(linear_result)


def _promote(linear_result: lx.RESULTS) -> optx.RESULTS:
    """The linear solve's result as the root finder's. A solver that cannot
    fail (`lineax.LU` returns the item `lineax.RESULTS.successful` itself)
    needs no promotion: even jitted, `promote` compiled two small programs the
    first time (Brusselator `Kvaerno5`, fresh process: about 0.03 s of 1.2 s)."""
    if linear_result is lx.RESULTS.successful:
        return optx.RESULTS.successful
    return _promoted(linear_result)


@jax.jit
def _failed(result: optx.RESULTS) -> Array:
    return result != optx.RESULTS.successful


# A recorded iteration (`replay_record`): its number of iterations plus this
# times its `RESULTS` code (0 if it converged); 0 records nothing. Iterations
# are recorded only where at most `REPLAY_MAX_STEPS` may be taken.
_CODE = 1024
REPLAY_MAX_STEPS = _CODE - 1


def replay_record(steps: Array, code: Array) -> Array:
    """How a stage's iteration ended, as one int32: `steps` iterations, then the
    `RESULTS` code `code` (0: converged). A recomputation passes it back as
    `options["replay"]` to stop at the same iteration with the same outcome."""
    return (steps + _CODE * code).astype(jnp.int32)


def replay_parts(record: Array) -> tuple[Array, Array]:
    """(iterations, whether it failed) of a `replay_record`."""
    return record % _CODE, record >= _CODE


def replay_code(record: Array) -> Array:
    return record // _CODE


class _NoAux(eqx.Module):
    fn: Callable

    def __call__(self, y, args):
        return self.fn(y, args)[0]


class VeryChord(optx.AbstractRootFinder):
    """The chord method for the stage equations of implicit Runge–Kutta methods:
    Newton's iteration with a fixed matrix, the Jacobian at a point the solver
    chooses (once per step, or kept across steps) instead of at each stage's
    initial guess as `optimistix.Chord` does.

    It stops by the rate of convergence (Hairer & Wanner, *Solving Ordinary
    Differential Equations II*, §IV.8): with `rate = |dz_k| / |dz_{k-1}|` in the
    norm scaled by `atol + rtol |z|`, the iteration has converged once
    `rate / (1 - rate) |dz_k| <= kappa`, and it gives up (`nonlinear_divergence`)
    once `rate >= 2` (between 1 and 2 it iterates on: from a poor guess the
    iteration may grow before it contracts), or after `max_steps`: an adaptive
    step-size controller then retries with a smaller step. A first correction that is
    already below `kappa**2` ends the iteration at once (a linear stage
    equation solved with its exact Jacobian). A failed iteration returns the
    point it started from, not its last iterate (which may be infinite), so that
    the root of a rejected step can still be differentiated.

    **Arguments:** `rtol`, `atol` (in `diffeqsolve`, build it with
    `with_stepsize_controller_tols(VeryChord)()` to take the controller's),
    `norm` (default `optimistix.max_norm`), `kappa` (default 0.01) and
    `linear_solver` (any `lineax` solver; default
    `lineax.AutoLinearSolver(well_posed=True)`, an LU factorisation for the
    square matrix; Diffrax's default is `well_posed=None`).

    Options (`optimistix.root_find(..., options=...)`): `init_state` (see
    `state_from`) and `scale_by`, a tree shaped like the root whose magnitude
    scales `rtol` in place of the iterate's own. The Runge–Kutta methods solve
    for a stage's *increment* and pass the state there: an increment is far
    smaller than the state, and measured against itself its iteration would
    have to converge below the rounding error of the vector field (ROBER,
    `atol = 1e-10`: every step five times longer than the last failed so).
    `replay`, an int32 `replay_record` of an earlier solve of the same equation
    (0: none): the iteration stops after as many iterations, with the same
    outcome, instead of by its tolerance. The backward pass of
    `RecursiveCheckpointAdjoint` recomputes steps with it: recompiled in
    another context, an ill-conditioned iteration rounds differently, and a
    tolerance test on the edge may stop one iteration earlier or later, moving
    the root by up to the tolerance.
    """

    rtol: float
    atol: float
    norm: Callable[[PyTree], Scalar] = optx.max_norm
    kappa: float = 1e-2
    # `well_posed=True`: the stage equations' matrix is square and meant to be
    # invertible; with `None` lineax takes a pseudo-inverse of a singular
    # diagonal (a one-dimensional state), whose zero correction then reads as
    # convergence: a wrong answer with no code.
    linear_solver: lx.AbstractLinearSolver = lx.AutoLinearSolver(well_posed=True)

    def state_from(
        self,
        operator: lx.AbstractLinearOperator,
        y: PyTree[Array],
        linear_state: PyTree | None = None,
    ) -> VeryChordState:
        """The initial state for iterating with the matrix `operator` (whose
        linear solver state, a factorisation, is `linear_state`, or computed
        here) from a point shaped like `y`. Pass it as
        `options=dict(init_state=...)`."""
        if linear_state is None:
            linear_state = self.linear_solver.init(operator, options={})
        linear_state = _stop_gradient(linear_state)
        leaves = jtu.tree_leaves(y)
        dtype = jnp.result_type(*leaves) if leaves else jnp.float64
        real = jnp.finfo(dtype).dtype
        return VeryChordState(
            linear_state=(operator, linear_state),
            start=y,
            diff=jtu.tree_map(lambda x: jnp.full(x.shape, jnp.inf, x.dtype), y),
            diffsize=jnp.array(jnp.inf, real),
            diffsize_prev=jnp.array(1.0, real),
            result=optx.RESULTS.successful,
            step=jnp.array(0),
        )

    def init(
        self,
        fn: Callable,
        y: PyTree[Array],
        args: PyTree,
        options: dict[str, Any],
        f_struct: PyTree[jax.ShapeDtypeStruct],
        aux_struct: PyTree[jax.ShapeDtypeStruct],
        tags: frozenset[object],
    ) -> VeryChordState:
        del f_struct, aux_struct
        if "init_state" in options:
            return options["init_state"]
        operator = lx.linearise(lx.JacobianLinearOperator(_NoAux(fn), y, args, tags))
        return self.state_from(operator, y)

    def step(
        self,
        fn: Callable,
        y: PyTree[Array],
        args: PyTree,
        options: dict[str, Any],
        state: VeryChordState,
        tags: frozenset[object],
    ) -> tuple[PyTree[Array], VeryChordState, Any]:
        del tags
        scale_by = options.get("scale_by")
        fx, aux = fn(y, args)
        _, linear_state = state.linear_state
        # `compute` directly rather than `lineax.linear_solve`: the iterations
        # are not differentiated (`optimistix.root_find` differentiates the
        # root by the implicit function theorem), and the primitive's rules
        # cost tracing and compile time.
        diff, linear_result, _ = self.linear_solver.compute(
            _stop_gradient(linear_state), fx, {}
        )
        new_y = jtu.tree_map(jnp.subtract, y, diff)
        scale = jtu.tree_map(
            lambda z: self.atol + self.rtol * jnp.abs(z),
            new_y if scale_by is None else scale_by,
        )
        with jax.numpy_dtype_promotion("standard"):
            size = self.norm(jtu.tree_map(jnp.divide, diff, scale))
        new_state = VeryChordState(
            linear_state=state.linear_state,
            start=state.start,
            diff=diff,
            diffsize=jnp.asarray(size, state.diffsize.dtype),
            diffsize_prev=state.diffsize,
            result=_promote(linear_result),
            step=state.step + 1,
        )
        return new_y, new_state, aux

    def terminate(
        self,
        fn: Callable,
        y: PyTree[Array],
        args: PyTree,
        options: dict[str, Any],
        state: VeryChordState,
        tags: frozenset[object],
    ) -> tuple[Array, optx.RESULTS]:
        del fn, y, args, tags
        done, result = self._tolerance_test(state)
        replay = options.get("replay")
        if replay is None:
            return done, result
        # A recomputation (`replay`, class docstring): stop where the recorded
        # iteration stopped, failed where it failed.
        count, failed = replay_parts(replay)
        forced = count > 0
        forced_result = optx.RESULTS.where(
            failed, optx.RESULTS.nonlinear_divergence, optx.RESULTS.successful
        )
        return (
            jnp.where(forced, state.step >= count, done),
            optx.RESULTS.where(forced, forced_result, result),
        )

    def _tolerance_test(self, state: VeryChordState) -> tuple[Array, optx.RESULTS]:
        """Whether the iteration stops, and how, by its rate of convergence."""
        rate = state.diffsize / state.diffsize_prev
        at_least_two = state.step >= 2
        tiny = (state.step == 1) & (state.diffsize <= self.kappa**2)
        converged = (
            at_least_two
            & (rate < 1)
            & (state.diffsize * rate / (1 - rate) <= self.kappa)
        )
        # Rounding floor: corrections this small are noise (a converged
        # iteration whose rate estimate is meaningless).
        floor = state.diffsize < 10 ** (2 - jnp.finfo(state.diffsize.dtype).precision)
        # (`optimistix` asks before the first iteration too, when `diffsize` is
        # still the initial infinity.)
        finite = jnp.isfinite(state.diffsize)
        started = state.step >= 1
        diverged = (started & ~finite) | (at_least_two & (rate >= DIVERGE) & ~floor)
        done = (converged | tiny | (at_least_two & floor)) & finite
        failed = _failed(state.result)
        result = optx.RESULTS.where(
            failed,
            state.result,
            optx.RESULTS.where(
                diverged & ~done,
                optx.RESULTS.nonlinear_divergence,
                optx.RESULTS.successful,
            ),
        )
        return done | diverged | failed, result

    def postprocess(
        self,
        fn: Callable,
        y: PyTree[Array],
        aux: Any,
        args: PyTree,
        options: dict[str, Any],
        state: VeryChordState,
        tags: frozenset[object],
        result: optx.RESULTS,
    ) -> tuple[PyTree[Array], Any, dict[str, Any]]:
        del fn, args, options, tags
        # A failed iteration returns the point it started from, not its last
        # iterate, which may be infinite or far off. Its value is of no use,
        # but `optimistix` differentiates the root by linearising the equation
        # there: at a non-finite iterate that linear solve gives NaN and
        # `lineax` raises, so the gradient of any solve with a rejected,
        # divergent step failed (ROBER, `Kvaerno5`, every adjoint). The
        # starting point is finite: a guess from the stages before it.
        failed = _failed(result)
        y = jtu.tree_map(lambda a, b: jnp.where(failed, a, b), state.start, y)
        return y, aux, {}
