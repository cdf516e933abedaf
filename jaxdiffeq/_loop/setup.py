"""The loop's initial state: the per-step state at `t0` and every output buffer
(allocated once, before the loop, and written in place)."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._results import RESULTS
from .attempt import solver_step
from .config import Env, Settings
from .outputs import initial_save_states
from .state import LastStep, Record, State, StepState, with_spill_row


def _dense_buffers(cfg: Settings, env: Env, y0, solver_state, made_jump, info_shape):
    if not cfg.dense:
        return None, None
    max_steps = cfg.max_steps
    assert max_steps is not None
    t0 = env.t0
    dense_ts = jnp.full((max_steps + 1,), jnp.inf, cfg.time_dtype).at[0].set(t0)
    # Row 0 starts as the information of a zero-length step at t0, so that the
    # dense output of a solve with t0 == t1 is y0.
    info_at_t0 = env.solver.step(
        env.terms, t0, t0, y0, env.args, solver_state, made_jump
    )[2]
    dense_infos = jtu.tree_map(
        lambda x, x0: jnp.zeros((max_steps, *x.shape), x.dtype).at[0].set(x0),
        info_shape,
        info_at_t0,
    )
    return dense_ts, dense_infos


def _record_buffers(cfg: Settings, env: Env, y0, solver_state):
    if not cfg.record:
        return None
    max_steps = cfg.max_steps
    assert max_steps is not None
    if cfg.record_times:
        rec_ts = jnp.full((max_steps + 1,), jnp.inf, cfg.time_dtype).at[0].set(env.t0)
    else:
        rec_ts = None
    if cfg.record_every is not None:
        rows = max_steps // cfg.record_every + 1
        rec_states = jtu.tree_map(
            lambda x: jnp.zeros((rows, *jnp.shape(x)), jnp.result_type(x)).at[0].set(x),
            (y0, solver_state),
        )
    else:
        rec_states = None
    return Record(rec_ts, rec_states)


def _placeholder_like(y0):
    def placeholder(x):
        # Any array of the right shape will do (it is read only after a step has
        # overwritten it); reusing `y0` where it fits saves compiling a fill.
        for y in jtu.tree_leaves(y0):
            if y.shape == x.shape and y.dtype == x.dtype:
                return y
        return jnp.zeros(x.shape, x.dtype)

    return placeholder


def initial_carry(
    cfg: Settings,
    env: Env,
    *,
    tnext,
    y0,
    solver_state,
    controller_state,
    made_jump,
) -> tuple[State, LastStep]:
    """The loop's carry at `t0`: the state (with spill rows on every output
    buffer, see `state.masked_write`) and an empty last step."""
    t0 = env.t0
    save_states, ts_indices = initial_save_states(cfg, env, y0)
    jump0 = jnp.asarray(made_jump, bool) if cfg.can_jump else None
    info_shape = jax.eval_shape(
        lambda *a: solver_step(cfg, env, *a),
        cfg.as_time(t0),
        cfg.as_time(tnext),
        y0,
        solver_state,
        jump0,
    )[2]
    dense_ts, dense_infos = _dense_buffers(
        cfg, env, y0, solver_state, made_jump, info_shape
    )
    int_zero = jnp.asarray(0, jnp.int32)
    step = StepState(
        y=y0,
        tprev=t0,
        tnext=tnext,
        made_jump=made_jump if cfg.can_jump else None,
        solver_state=solver_state,
        controller_state=controller_state,
        result=jnp.asarray(RESULTS.successful.value),
        num_accepted_steps=int_zero,
        num_rejected_steps=int_zero,
        ts_indices=ts_indices,
        progress_state=cfg.progress_meter.init() if cfg.use_progress else None,
    )
    last = LastStep(
        tprev=t0,
        tnext=t0,
        dense_info=jtu.tree_map(_placeholder_like(y0), info_shape)
        if cfg.needs_dense_info
        else None,
        write=jnp.asarray(False),
        fresh=jnp.asarray(False),
    )
    record = _record_buffers(cfg, env, y0, solver_state)
    buffers = with_spill_row((save_states, dense_ts, dense_infos, record))
    tape = None
    if cfg.tape_width:
        assert cfg.max_steps is not None
        tape = jnp.zeros((cfg.max_steps + 1, cfg.tape_width), jnp.int32)
    return State(step, *buffers, tape=tape), last
