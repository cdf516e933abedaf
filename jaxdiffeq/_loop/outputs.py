"""The output writes: the rows of each `SubSaveAt` (`t0`, `ts`, `steps`, `t1`),
the dense-output buffers and the reversible adjoint's record."""

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._misc import any_lane, in_vmap, where
from .config import Env, Settings
from .state import (
    LastStep,
    Layout,
    Record,
    SaveState,
    State,
    masked_write,
    scatter_rows,
    t1_row_written,
    tree_masked_write,
    value_in_step,
)


def write_row(env: Env, sub, save_state: SaveState, row, t, y, pred) -> SaveState:
    out = sub.fn(t * env.direction, y, env.args)
    ys = tree_masked_write(save_state.ys, row, out, pred)
    ts = masked_write(save_state.ts, row, t * env.direction, pred)
    return SaveState(ts=ts, ys=ys)


def ts_pending(sub, lay: Layout, ts_index, tnext):
    """Whether the next `SaveAt.ts` output lies at or before `tnext`."""
    if sub.ts is None:
        return jnp.asarray(False)
    index = jnp.minimum(ts_index, lay.num_ts - 1)
    return (ts_index < lay.num_ts) & (sub.ts[index] <= tnext)


def any_ts_pending(cfg: Settings, env: Env, ts_indices, tnext):
    """Whether any `SubSaveAt` has its next `ts` output at or before `tnext`."""
    pending = jnp.asarray(False)
    for sub, lay, index in zip(env.subs, cfg.layouts, ts_indices):
        if sub.ts is not None:
            pending = pending | ts_pending(sub, lay, index, tnext)
    return pending


def _due_rows(sub, lay: Layout, ts_index, width: int, last: LastStep):
    """The next `width` entries of `ts` from `ts_index` (indices, times, and
    which of them are due: in the last step, a prefix as `ts` is sorted)."""
    j = ts_index + jnp.arange(width, dtype=ts_index.dtype)
    t = sub.ts[jnp.minimum(j, lay.num_ts - 1)]
    due = last.write & (j < lay.num_ts) & (t <= last.tnext)
    return j, t, due


def _write_due_ts(env: Env, sub, lay, width, s, ts_index, interpolation, last, y1):
    """Write up to `width` of the `SaveAt.ts` outputs that lie in the last step,
    all at once: one evaluation of the interpolant at `width` times, one
    scatter of the due rows."""
    j, t, due = _due_rows(sub, lay, ts_index, width, last)

    def output(t):
        y_t = value_in_step(interpolation, last.tnext, y1, t)
        return sub.fn(t * env.direction, y_t, env.args)

    out = jax.vmap(output)(t)
    # Rows not due go past the end of the buffer, where the scatter drops them
    # (each to its own index, so the indices stay unique and sorted).
    num_rows = s.ts.shape[0]
    rows = where(due, lay.offset_ts + j, num_rows + jnp.arange(width, dtype=j.dtype))
    ys = jtu.tree_map(lambda b, o: scatter_rows(b, rows, o), s.ys, out)
    ts = scatter_rows(s.ts, rows, t * env.direction)
    count = jnp.sum(due, dtype=ts_index.dtype)
    return SaveState(ts=ts, ys=ys), ts_index + count


def _write_next_row(env: Env, sub, lay, s, ts_index, interpolation, last, y1):
    """Write the next `SaveAt.ts` row if it lies in the last step."""
    pred = last.write & ts_pending(sub, lay, ts_index, last.tnext)
    t = sub.ts[jnp.minimum(ts_index, lay.num_ts - 1)]
    y_t = value_in_step(interpolation, last.tnext, y1, t)
    s = write_row(env, sub, s, lay.offset_ts + ts_index, t, y_t, pred)
    return s, ts_index + pred.astype(ts_index.dtype)


def _loop_due_ts(env: Env, sub, lay, s, ts_index, interpolation, last, y1):
    """Write the `SaveAt.ts` outputs that lie in the last step one row at a
    time, in a `lax.while_loop` over the due rows (the forward loop's writes
    for small states, see `config.loop_writes`). Its condition is
    reduced across lanes, so that under `vmap` the loop does not select its
    whole carry, output buffers included, at every iteration."""

    def cond(carry):
        _, index = carry
        return any_lane(last.write & ts_pending(sub, lay, index, last.tnext))

    def body(carry):
        s, index = carry
        return _write_next_row(env, sub, lay, s, index, interpolation, last, y1)

    return lax.while_loop(cond, body, (s, ts_index))


def _save_due_ts(
    loop: bool, env: Env, sub, lay, widths, s, ts_index, interpolation, last, y1
):
    """Write the `SaveAt.ts` outputs that lie in the last step: all of them
    where `loop` (row by row, see `config.loop_writes`; outside `vmap` where
    the width exceeds 1), else up to `width` of them, or up to `wide` where
    more are due (see `config.wide_ts_width`). A step with more still is
    visited again by the loop before stepping resumes."""
    width, wide = widths
    if sub.ts is None:
        return s, ts_index
    rest = (s, ts_index, interpolation, last, y1)
    if loop and width == 1 and not wide:
        # About one output per step or fewer: the loop under `vmap` too, where
        # it costs about what a revisit of the step would.
        return _loop_due_ts(env, sub, lay, *rest)
    if loop:
        # Under `vmap` the loop runs as long as the lane with the most due rows
        # (each iteration scattering into every lane's buffer): there the
        # vectorised writes below are faster (Lorenz, 16 lanes, 10,000 saved
        # times: 21 ms against 8.1 ms). The branch not taken is dropped when
        # XLA compiles the solve (`in_vmap` is then a constant).
        return lax.cond(
            in_vmap(last.write),
            lambda r: _save_due_ts(False, env, sub, lay, widths, *r),
            lambda r: _loop_due_ts(env, sub, lay, *r),
            rest,
        )
    if width == 1 and not wide:
        return _write_next_row(env, sub, lay, *rest)
    args = (env, sub, lay)
    if not wide:
        return _write_due_ts(*args, width, *rest)
    # Unbatched under `vmap` (one lane with many due rows widens every lane's
    # visit), so that the `cond` stays a branch rather than a select of both.
    more = any_lane(last.write & ts_pending(sub, lay, ts_index + width, last.tnext))
    return lax.cond(
        more,
        lambda r: _write_due_ts(*args, wide, *r),
        lambda r: _write_due_ts(*args, width, *r),
        rest,
    )


def _write_saveat(cfg: Settings, env: Env, state: State, last: LastStep):
    """Each `SubSaveAt`'s due `ts` row and `steps` row."""
    step = state.step
    fresh = last.fresh & last.write
    y1 = step.y  # the end of the last step wherever `last.write` is true
    if cfg.any_ts:
        assert last.dense_info is not None
        interpolation = cfg.interpolation_cls(
            t0=last.tprev, t1=last.tnext, **last.dense_info
        )
    else:
        interpolation = None
    save_states = []
    ts_indices = []
    loops = cfg.ts_loops or (False,) * len(env.subs)
    for sub, lay, widths, loop, s, index in zip(
        env.subs,
        cfg.layouts,
        zip(cfg.ts_widths, cfg.ts_wide_widths),
        loops,
        state.save_states,
        step.ts_indices,
    ):
        s, index = _save_due_ts(
            loop, env, sub, lay, widths, s, index, interpolation, last, y1
        )
        if sub.steps:
            count = step.num_accepted_steps
            pred = fresh & (count % sub.steps == 0)
            row = lay.offset_steps + jnp.clip(
                count // sub.steps - 1, 0, max(lay.num_steps - 1, 0)
            )
            s = write_row(env, sub, s, row, last.tnext, y1, pred)
        save_states.append(s)
        ts_indices.append(index)
    return save_states, ts_indices


def _write_dense(cfg: Settings, state: State, last: LastStep):
    if not cfg.dense:
        return None, None
    assert cfg.max_steps is not None
    fresh = last.fresh & last.write
    count = state.step.num_accepted_steps
    dense_ts = masked_write(
        state.dense_ts, jnp.minimum(count, cfg.max_steps), last.tnext, fresh
    )
    dense_infos = tree_masked_write(
        state.dense_infos,
        jnp.clip(count - 1, 0, cfg.max_steps - 1),
        last.dense_info,
        fresh,
    )
    return dense_ts, dense_infos


def _write_record(cfg: Settings, state: State, last: LastStep):
    if state.record is None:
        return None
    assert cfg.max_steps is not None
    fresh = last.fresh & last.write
    step = state.step
    count = step.num_accepted_steps
    rec_ts = state.record.ts
    if rec_ts is not None:
        rec_ts = masked_write(
            rec_ts, jnp.minimum(count, cfg.max_steps), last.tnext, fresh
        )
    rec_states = state.record.states
    if cfg.record_every is not None:
        rec_states = tree_masked_write(
            rec_states,
            count // cfg.record_every,
            (step.y, step.solver_state),
            fresh & (count % cfg.record_every == 0),
        )
    return Record(rec_ts, rec_states)


def write_outputs(
    cfg: Settings, env: Env, state: State, last: LastStep
) -> tuple[State, LastStep]:
    """Write what the last step owes: its `ts` outputs (up to `cfg.ts_widths`
    per `SubSaveAt`; the loop comes back for the rest) and, for a freshly
    accepted step, its `steps`, dense and record rows."""
    save_states, ts_indices = _write_saveat(cfg, env, state, last)
    dense_ts, dense_infos = _write_dense(cfg, state, last)
    record = _write_record(cfg, state, last)
    still = last.write & any_ts_pending(cfg, env, ts_indices, last.tnext)
    step = eqx.tree_at(lambda s: s.ts_indices, state.step, ts_indices)
    last = eqx.tree_at(
        lambda x: (x.write, x.fresh), last, (still, jnp.zeros_like(last.fresh))
    )
    return State(step, save_states, dense_ts, dense_infos, record, state.tape), last


def initial_save_states(cfg: Settings, env: Env, y0):
    """The buffers of each `SubSaveAt`, filled with `inf` except the rows due at
    `t0`: `SaveAt(t0=True)` and any `ts` equal to `t0` (no step contains them;
    they are a prefix of the sorted `ts`, written without a loop)."""
    t0 = env.t0
    save_states = []
    ts_indices = []
    for sub, lay in zip(env.subs, cfg.layouts):
        out0 = sub.fn(t0 * env.direction, y0, env.args)
        rows = jnp.arange(lay.size)
        at_t0 = rows < int(sub.t0)
        if sub.ts is not None:
            ts_at_t0 = sub.ts <= t0
            at_t0 = at_t0 | jnp.zeros(lay.size, bool).at[
                lay.offset_ts : lay.offset_steps
            ].set(ts_at_t0)
            ts_index = jnp.sum(ts_at_t0, dtype=jnp.int32)
        else:
            ts_index = jnp.asarray(0, jnp.int32)

        def fill(o, at_t0=at_t0, size=lay.size):
            mask = at_t0.reshape((size,) + (1,) * jnp.ndim(o))
            return where(mask, jnp.asarray(o)[None], jnp.inf).astype(o.dtype)

        ts_buffer = where(at_t0, t0 * env.direction, jnp.inf).astype(cfg.time_dtype)
        save_states.append(SaveState(ts=ts_buffer, ys=jtu.tree_map(fill, out0)))
        ts_indices.append(ts_index)
    return save_states, ts_indices


def final_save_states(cfg: Settings, env: Env, state: State) -> list[SaveState]:
    """Write the `t1` rows: the state where the solve ended (`t1`, or as far as
    it got)."""
    step = state.step
    save_states = []
    for sub, lay, s in zip(env.subs, cfg.layouts, state.save_states):
        if sub.t1:
            written = t1_row_written(lay, step.num_accepted_steps)
            s = write_row(env, sub, s, lay.offset_t1, step.tprev, step.y, written)
        save_states.append(s)
    return save_states
