"""The step loop: one `while_loop` over steps, outputs written in place.

One iteration attempts a step (`solver.step`), lets the controller accept or reject
it (`controller.adapt_step_size`), and writes the outputs that fall inside an
accepted step. Everything here works on the forward time axis `tau = direction *
t`; `diffeqsolve` maps times in and out.

Why it looks the way it does (see DESIGN.md, facts 1–4):

- Outputs at `SaveAt(ts)` are interpolated inside the step where they fall (output
  `s` belongs to step `[t_k, t_{k+1}]` iff `t_k < s <= t_{k+1}`), by a short inner
  loop, rather than looping over output times.
- Under `vmap` the loop predicate is reduced across the batch (`any_lane`) and the
  body masks its own updates (`lane_mask`); there is no `select` over the output
  buffers, which are written in place with `dynamic_update_slice`.
"""

from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from ._interpolation import LocalLinearInterpolation
from ._misc import any_lane, lane_mask
from ._progress import NoProgressMeter
from ._results import RESULTS
from ._saveat import SubSaveAt
from ._while import while_loop


def _tree_where(pred, new, old):
    return jtu.tree_map(lambda a, b: jnp.where(pred, a, b), new, old)


def _masked_write(buffer, index, value, pred):
    """`buffer[index] = value` where `pred`, else leave it: a gather, a select of
    one row and an in-place `dynamic_update_slice`."""
    old = lax.dynamic_index_in_dim(buffer, index, 0, keepdims=False)
    new = jnp.where(pred, value.astype(buffer.dtype), old)
    return lax.dynamic_update_index_in_dim(buffer, new, index, 0)


def _tree_masked_write(buffers, index, values, pred):
    return jtu.tree_map(
        lambda b, v: _masked_write(b, index, v, pred), buffers, values
    )


class SaveState(eqx.Module):
    """Output buffers of one `SubSaveAt`: rows `[t0 | ts | steps | t1]`."""

    ts: Array
    ys: PyTree[Array]
    ts_index: Array  # next entry of SaveAt.ts to write


class _Layout(eqx.Module):
    """Static row offsets of one `SubSaveAt` in its buffers."""

    num_ts: int = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    offset_ts: int = eqx.field(static=True)
    offset_steps: int = eqx.field(static=True)
    offset_t1: int = eqx.field(static=True)
    size: int = eqx.field(static=True)


def layout(sub: SubSaveAt, max_steps: int | None) -> _Layout:
    num_ts = 0 if sub.ts is None else int(sub.ts.shape[0])
    if sub.steps:
        assert max_steps is not None
        num_steps = max_steps // sub.steps
    else:
        num_steps = 0
    offset_ts = int(sub.t0)
    offset_steps = offset_ts + num_ts
    offset_t1 = offset_steps + num_steps
    size = offset_t1 + int(sub.t1)
    return _Layout(num_ts, num_steps, offset_ts, offset_steps, offset_t1, size)


class State(eqx.Module):
    y: PyTree[Array]
    tprev: Array
    tnext: Array
    made_jump: Any
    solver_state: PyTree
    controller_state: PyTree
    result: Array
    num_steps: Array
    num_accepted_steps: Array
    num_rejected_steps: Array
    save_states: list[SaveState]
    dense_ts: Array | None
    dense_infos: PyTree[Array] | None
    progress_state: Any


def _is_subsaveat(x):
    return isinstance(x, SubSaveAt)


def run(
    *,
    terms,
    solver,
    controller,
    subs: list[SubSaveAt],
    dense: bool,
    t0,
    t1,
    tnext,
    y0,
    args,
    direction,
    solver_state,
    controller_state,
    made_jump,
    max_steps: int | None,
    progress_meter,
) -> State:
    """Run the step loop from `t0` to `t1` (forward time axis) and return the final
    state with filled output buffers."""
    time_dtype = jnp.result_type(t0)
    error_order = solver.error_order(terms)
    can_jump = controller.can_jump()
    interpolation_cls = solver.interpolation_cls
    layouts = [layout(sub, max_steps) for sub in subs]
    # Steps ending within ~100 ulp of t1 are stretched to t1, so that no tiny
    # (numerically meaningless) last step is taken.
    ulp = jnp.abs(jnp.nextafter(t1, jnp.asarray(jnp.inf, time_dtype)) - t1)
    t1_floor = t1 - 100 * ulp

    def fn_shape(sub):
        return jax.eval_shape(lambda: sub.fn(t0 * direction, y0, args))

    def init_save_state(sub, lay):
        out = fn_shape(sub)
        ys = jtu.tree_map(
            lambda o: jnp.full((lay.size, *o.shape), jnp.inf, o.dtype), out
        )
        ts = jnp.full((lay.size,), jnp.inf, time_dtype)
        return SaveState(ts=ts, ys=ys, ts_index=jnp.asarray(0, jnp.int32))

    def write_row(sub, save_state, row, t, y, pred):
        out = sub.fn(t * direction, y, args)
        ys = _tree_masked_write(save_state.ys, row, out, pred)
        ts = _masked_write(save_state.ts, row, t * direction, pred)
        return eqx.tree_at(lambda s: (s.ts, s.ys), save_state, (ts, ys))

    def save_ts(sub, lay, save_state, interpolation, tnext, y1, pred_step):
        """Write every `SaveAt.ts` output in `(tprev, tnext]` (inner loop)."""
        if sub.ts is None:
            return save_state
        ts = sub.ts

        def pending(s):
            index = jnp.minimum(s.ts_index, lay.num_ts - 1)
            return pred_step & (s.ts_index < lay.num_ts) & (ts[index] <= tnext)

        def body(s):
            pred = lane_mask(pending(s))
            index = jnp.minimum(s.ts_index, lay.num_ts - 1)
            t = ts[index]
            y_t = interpolation.evaluate(t)
            # At the end of the step use the step's own value, not the interpolant
            # (exact, and no rounding from the polynomial).
            y_t = _tree_where(t == tnext, y1, y_t)
            s = write_row(sub, s, lay.offset_ts + index, t, y_t, pred)
            return eqx.tree_at(lambda x: x.ts_index, s, s.ts_index + pred)

        return while_loop(lambda s: any_lane(pending(s)), body, save_state)

    # Initial outputs: t0, and any `ts` equal to t0 (no step contains them).
    save_states = []
    for sub, lay in zip(subs, layouts):
        s = init_save_state(sub, lay)
        if sub.t0:
            s = write_row(sub, s, 0, t0, y0, True)
        constant = LocalLinearInterpolation(t0=t0, t1=t0, y0=y0, y1=y0)
        s = save_ts(sub, lay, s, constant, t0, y0, True)
        save_states.append(s)

    if dense:
        assert max_steps is not None
        dense_ts = jnp.full((max_steps + 1,), jnp.inf, time_dtype).at[0].set(t0)
        info_shape = jax.eval_shape(
            lambda: solver.step(terms, t0, tnext, y0, args, solver_state, made_jump)[2]
        )
        dense_infos = jtu.tree_map(
            lambda x: jnp.zeros((max_steps, *x.shape), x.dtype), info_shape
        )
    else:
        dense_ts = dense_infos = None

    use_progress = not isinstance(progress_meter, NoProgressMeter)
    int_zero = jnp.asarray(0, jnp.int32)
    init_state = State(
        y=y0,
        tprev=t0,
        tnext=tnext,
        made_jump=made_jump if can_jump else None,
        solver_state=solver_state,
        controller_state=controller_state,
        result=jnp.asarray(RESULTS.successful.value),
        num_steps=int_zero,
        num_accepted_steps=int_zero,
        num_rejected_steps=int_zero,
        save_states=save_states,
        dense_ts=dense_ts,
        dense_infos=dense_infos,
        progress_state=progress_meter.init() if use_progress else None,
    )

    def unfinished(state):
        pred = (state.tprev < t1) & (state.result == RESULTS.successful.value)
        if max_steps is not None:
            pred = pred & (state.num_steps < max_steps)
        return pred

    def cond_fun(state):
        return any_lane(unfinished(state))

    def body_fun(state):
        active = lane_mask(unfinished(state))
        step_made_jump = state.made_jump if can_jump else False
        y1, y_error, dense_info, new_solver_state, solver_result = solver.step(
            terms,
            state.tprev,
            state.tnext,
            state.y,
            args,
            state.solver_state,
            step_made_jump,
        )
        (
            keep_step,
            next_tprev,
            next_tnext,
            next_made_jump,
            new_controller_state,
            controller_result,
        ) = controller.adapt_step_size(
            state.tprev,
            state.tnext,
            state.y,
            y1,
            args,
            y_error,
            error_order,
            state.controller_state,
        )
        keep_step = jnp.asarray(keep_step)
        next_tprev = jnp.minimum(next_tprev, t1)
        clip = next_tnext > t1_floor
        next_tnext = jnp.where(
            clip,
            jnp.where(keep_step, t1, next_tprev + 0.5 * (t1 - next_tprev)),
            next_tnext,
        )

        result = state.result
        for code in (solver_result, controller_result):
            if isinstance(code, RESULTS):
                code = code.value
            result = jnp.where(result == 0, code, result)
        finite = jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(x)) for x in jtu.tree_leaves(y1)])
        ) if jtu.tree_leaves(y1) else jnp.asarray(True)
        result = jnp.where(
            (result == 0) & keep_step & ~finite, RESULTS.nonfinite_value.value, result
        )
        stuck = (next_tnext <= next_tprev) & (next_tprev < t1)
        result = jnp.where(
            (result == 0) & stuck, RESULTS.dt_min_reached.value, result
        )

        accept = active & keep_step & (result == 0)
        num_accepted = state.num_accepted_steps + accept
        new_save_states = []
        if any(sub.ts is not None for sub in subs):
            interpolation = interpolation_cls(
                t0=state.tprev, t1=state.tnext, **dense_info
            )
        else:
            interpolation = None
        for sub, lay, s in zip(subs, layouts, state.save_states):
            s = save_ts(sub, lay, s, interpolation, state.tnext, y1, accept)
            if sub.steps:
                pred = accept & (num_accepted % sub.steps == 0)
                row = lay.offset_steps + jnp.clip(
                    num_accepted // sub.steps - 1, 0, max(lay.num_steps - 1, 0)
                )
                s = write_row(sub, s, row, state.tnext, y1, pred)
            new_save_states.append(s)

        if dense:
            dense_ts = _masked_write(
                state.dense_ts,
                jnp.minimum(num_accepted, max_steps),
                state.tnext,
                accept,
            )
            dense_infos = _tree_masked_write(
                state.dense_infos,
                jnp.clip(num_accepted - 1, 0, max_steps - 1),
                dense_info,
                accept,
            )
        else:
            dense_ts = dense_infos = None

        if use_progress:
            fraction = jnp.where(t1 > t0, (next_tprev - t0) / (t1 - t0), 1.0)
            progress_state = progress_meter.step(state.progress_state, fraction)
        else:
            progress_state = None

        return State(
            y=_tree_where(accept, y1, state.y),
            tprev=jnp.where(active, next_tprev, state.tprev),
            tnext=jnp.where(active, next_tnext, state.tnext),
            made_jump=jnp.where(active, next_made_jump, state.made_jump)
            if can_jump
            else None,
            solver_state=_tree_where(accept, new_solver_state, state.solver_state),
            controller_state=_tree_where(
                active, new_controller_state, state.controller_state
            ),
            result=jnp.where(active, result, state.result),
            num_steps=state.num_steps + active,
            num_accepted_steps=num_accepted,
            num_rejected_steps=state.num_rejected_steps + (active & ~keep_step),
            save_states=new_save_states,
            dense_ts=dense_ts,
            dense_infos=dense_infos,
            progress_state=progress_state,
        )

    final = while_loop(cond_fun, body_fun, init_state, max_steps=max_steps)

    result = final.result
    if max_steps is not None:
        ran_out = (final.tprev < t1) & (final.num_steps >= max_steps)
        result = jnp.where(
            (result == 0) & ran_out, RESULTS.max_steps_reached.value, result
        )
    if use_progress:
        progress_meter.close(final.progress_state)

    # Final outputs: t1 (or as far as the solve got).
    save_states = []
    for sub, lay, s in zip(subs, layouts, final.save_states):
        if sub.t1:
            s = write_row(sub, s, lay.offset_t1, final.tprev, final.y, True)
        save_states.append(s)
    return eqx.tree_at(
        lambda s: (s.result, s.save_states),
        final,
        (result, save_states),
    )
