"""One step attempt: the solver's step, the controller's decision, the result
codes, and the masked update of the small per-step state."""

import contextlib

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from .._controller.base import AbstractAdaptiveStepSizeController
from .._controller.clip import innermost_controller
from .._misc import all_finite, any_lane, lane_mask, where
from .._results import RESULTS
from .._solver.implicit import RETRYABLE
from .._solver.runge_kutta import may_fold, reverse_only, unfolded
from .config import Env, Settings
from .outputs import any_ts_pending
from .select import tree_where
from .state import LastStep, StepState, masked_write


# One jitted view of the solver step, shared by the shape query and the loop body
# (and by every trace of the loop's functions): later uses are hits in JAX's trace
# cache, which saves tracing the step (and the vector field) again at compile
# time. Callers cast arguments to fixed dtypes so that uses have equal avals.
# `fold` (static) is whether the step may use the folded stage layout (not in
# reverse-mode loop bodies, see `runge_kutta.unfolded`), `rev_only` whether it
# is differentiated in reverse mode alone (`runge_kutta.reverse_only`).
# `tape` (with `Settings.tape_width`; `None` without): the step repeats the
# decisions recorded there (zeros: decide afresh) and returns its own record too.
@eqx.filter_jit
def _solver_step(
    solver, terms, args, tprev, tnext, y, state, jump, fold, rev_only, tape
):
    with contextlib.nullcontext() if fold else unfolded(deferred=True):
        with reverse_only() if rev_only else contextlib.nullcontext():
            if tape is None:
                return solver.step(terms, tprev, tnext, y, args, state, jump)
            return solver.step_with_tape(
                terms, tprev, tnext, y, args, state, jump, tape
            )


def solver_step(cfg: Settings, env: Env, tprev, tnext, y, state, jump, tape=None):
    jump = jump if cfg.can_jump else False
    # Where nothing would fold, one value of `fold`, so that every use of the
    # step shares one trace (the reverse-mode body and the set-up alike): two
    # traces of the Lorenz gradient's step cost 0.1 s more lowering.
    fold = cfg.fold_stages or not may_fold(env.terms, y)
    return _solver_step(
        env.solver,
        env.terms,
        env.args,
        tprev,
        tnext,
        y,
        state,
        jump,
        fold,
        cfg.reverse_only and may_fold(env.terms, y),
        tape,
    )


def unfinished(cfg: Settings, env: Env, step: StepState):
    pred = (step.tprev < env.t1) & (step.result == RESULTS.successful.value)
    if cfg.max_steps is not None:
        pred = pred & (step.num_steps < cfg.max_steps)
    return pred


def _next_times(env: Env, keep_step, next_tprev, next_tnext):
    """The controller's proposal, clipped to `t1`: a step that would end within
    ~100 ulp of `t1` is stretched to end there."""
    next_tprev = jnp.minimum(next_tprev, env.t1)
    clip = next_tnext > env.t1_floor
    next_tnext = where(
        clip,
        where(keep_step, env.t1, next_tprev + 0.5 * (env.t1 - next_tprev)),
        next_tnext,
    )
    return next_tprev, next_tnext


def _result_code(env: Env, step, codes, y1, keep_step, next_tprev, next_tnext):
    """The step's `RESULTS` code: the first failure of the solver or the
    controller, a non-finite accepted state, or no progress possible."""
    result = step.result
    for code in codes:
        if isinstance(code, RESULTS):
            code = code.value
        result = where(result == 0, code, result)
    finite = jnp.asarray(True)
    for x in jtu.tree_leaves(y1):
        finite = finite & all_finite(lax.stop_gradient(jnp.asarray(x)))
    result = where(
        (result == 0) & keep_step & ~finite, RESULTS.nonfinite_value.value, result
    )
    # No progress possible (the step size underflowed, e.g. after repeated NaN
    # errors): stop with a failure instead of spinning until max_steps.
    stuck = (next_tnext <= next_tprev) & (next_tprev < env.t1)
    return where((result == 0) & stuck, RESULTS.dt_min_reached.value, result)


def _progress(cfg: Settings, env: Env, step: StepState, advance, next_tprev):
    if not cfg.use_progress:
        return None
    reached = where(advance, next_tprev, step.tprev)
    fraction = where(env.t1 > env.t0, (reached - env.t0) / (env.t1 - env.t0), 1.0)
    return cfg.progress_meter.step(step.progress_state, fraction)


def _retried(env: Env, y_error, solver_result):
    """An implicit solver whose stage equation failed returns an infinite error
    estimate with the failure's code. An adaptive controller rejects such a step
    and retries it with a smaller one, so the code is dropped there; with any
    other controller (constant steps) the solve stops with it."""
    if y_error is None or not isinstance(
        innermost_controller(env.controller), AbstractAdaptiveStepSizeController
    ):
        return solver_result
    if not isinstance(solver_result, RESULTS):
        solver_result = RESULTS(solver_result)
    retryable = jnp.asarray(False)
    for code in RETRYABLE:
        retryable = retryable | (solver_result == code)
    return RESULTS.where(retryable, RESULTS.successful, solver_result)


def _again(cfg: Settings, step: StepState, retry, decision):
    """The decision on a step the solver attempts again (`retries`: a failed
    Newton iteration with a kept Jacobian): not accepted, the same times, and
    not a failure even with constant steps. (The caller keeps the controller's
    state.)"""
    keep_step, next_tprev, next_tnext, next_made_jump, solver_result = decision
    if not isinstance(solver_result, RESULTS):
        solver_result = RESULTS(solver_result)
    if cfg.can_jump:
        next_made_jump = where(retry, step.made_jump, next_made_jump)
    return (
        keep_step & ~retry,
        where(retry, step.tprev, next_tprev),
        where(retry, step.tnext, next_tnext),
        next_made_jump,
        RESULTS.where(retry, RESULTS.successful, solver_result),
    )


def attempt_step(
    cfg: Settings, env: Env, step: StepState, hold=None
) -> tuple[StepState, LastStep]:
    """Attempt one step, let the controller decide on it, and update the small
    state (masked, for lanes that have finished, and where `hold`)."""
    new_step, last, _ = attempt_step_taped(cfg, env, step, hold, None)
    return new_step, last


def _tape_row(cfg: Settings, step: StepState, tape):
    """The attempt's row of the tape; zeros where the tape is not read (the
    forward pass), rather than `None`: the same trace of the step as where it
    is read (JAX's trace cache), not a second one."""
    if cfg.tape_read:
        return lax.dynamic_index_in_dim(tape, step.num_steps, 0, keepdims=False)
    return jnp.zeros(tape.shape[1:], tape.dtype)


def _taped_step(cfg: Settings, env: Env, step: StepState, tape, active):
    """The solver's step from `step`, and the tape with the attempt's record
    written in its row where `active` (no tape: `None`)."""
    out = solver_step(
        cfg,
        env,
        cfg.as_time(step.tprev),
        cfg.as_time(step.tnext),
        step.y,
        step.solver_state,
        jnp.asarray(step.made_jump, bool) if cfg.can_jump else None,
        None if tape is None else _tape_row(cfg, step, tape),
    )
    if tape is None:
        return (*out, None)
    *out, record = out
    return (*out, masked_write(tape, step.num_steps, record, active))


def attempt_step_taped(
    cfg: Settings, env: Env, step: StepState, hold, tape
) -> tuple[StepState, LastStep, Array | None]:
    """`attempt_step` with the loop's `tape` (`State.tape`, or `None`): the
    solver repeats the decisions recorded in the attempt's row (the forward
    pass's, when the checkpointed loop recomputes it; zeros the first time)
    and the row is written with this attempt's."""
    active = lane_mask(unfinished(cfg, env, step))
    if hold is not None:
        active = active & ~hold
    y1, y_error, dense_info, new_solver_state, solver_result, tape = _taped_step(
        cfg, env, step, tape, active
    )
    solver_result = _retried(env, y_error, solver_result)
    (
        keep_step,
        next_tprev,
        next_tnext,
        next_made_jump,
        new_controller_state,
        controller_result,
    ) = env.controller.adapt_step_size(
        step.tprev,
        step.tnext,
        step.y,
        y1,
        env.args,
        y_error,
        cfg.error_order,
        step.controller_state,
    )
    keep_step = jnp.asarray(keep_step)
    next_tprev, next_tnext = _next_times(env, keep_step, next_tprev, next_tnext)
    retry = env.solver.retries(new_solver_state)
    if retry is not None:
        if getattr(innermost_controller(env.controller), "unvmap_dt", False):
            retry = any_lane(retry)  # lanes that share their steps retry together
        keep_step, next_tprev, next_tnext, next_made_jump, solver_result = _again(
            cfg,
            step,
            retry,
            (keep_step, next_tprev, next_tnext, next_made_jump, solver_result),
        )
    result = _result_code(
        env,
        step,
        (solver_result, controller_result),
        y1,
        keep_step,
        next_tprev,
        next_tnext,
    )
    # A step that failed (result != 0) leaves the time and state where they were,
    # so that the returned state and time agree.
    advance = active & (result == 0)
    accept = advance & keep_step
    new_step = StepState(
        y=tree_where(accept, y1, step.y, cfg.cond_size),
        tprev=where(advance, next_tprev, step.tprev),
        tnext=where(advance, next_tnext, step.tnext),
        made_jump=where(advance, next_made_jump, step.made_jump)
        if cfg.can_jump
        else None,
        # A solver state kept on rejected steps too (a Newton matrix) is taken
        # whatever the step's fate: outside `vmap` `active` is the constant
        # `True`, and XLA drops the select, which copied the Jacobian and its
        # factors at every step (a state that fails the solve ends it).
        solver_state=tree_where(
            active if env.solver.keeps_state_on_reject else accept,
            new_solver_state,
            step.solver_state,
            cfg.cond_size,
        ),
        controller_state=tree_where(
            advance if retry is None else advance & ~retry,
            new_controller_state,
            step.controller_state,
            cfg.cond_size,
        ),
        result=where(active, result, step.result),
        num_accepted_steps=step.num_accepted_steps + accept.astype(jnp.int32),
        num_rejected_steps=step.num_rejected_steps
        + (active & ~accept).astype(jnp.int32),
        ts_indices=step.ts_indices,
        progress_state=_progress(cfg, env, step, advance, next_tprev),
    )
    if cfg.writes_every_step:
        write = accept
    else:
        write = accept & any_ts_pending(cfg, env, step.ts_indices, step.tnext)
    last = LastStep(
        tprev=step.tprev,
        tnext=step.tnext,
        dense_info=dense_info if cfg.needs_dense_info else None,
        write=jnp.asarray(write),
        fresh=accept,
    )
    return new_step, last, tape
