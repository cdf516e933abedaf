"""The step loop: a loop over steps, outputs written in place.

One step attempts a step (`solver.step`) and lets the controller accept or reject it
(`controller.adapt_step_size`); the outputs that fall inside an accepted step are
then written to preallocated buffers. Everything here works on the forward time
axis `tau = direction * t`; `diffeqsolve` maps times in and out.

Why it looks the way it does (see DESIGN.md, facts 1–4):

- Outputs at `SaveAt(ts)` are interpolated inside the step where they fall (output
  `s` belongs to step `[t_k, t_{k+1}]` iff `t_k < s <= t_{k+1}`), by a short inner
  loop over the few outputs of that step, rather than looping over output times.
- Under `vmap` every loop predicate is reduced across the batch (`any_lane`) and the
  bodies mask their own updates (`lane_mask`): there is no `select` over the output
  buffers, which are written in place with `dynamic_update_slice`.
- Steps run in an inner loop whose carry holds only the small per-step state; it
  exits after any step that has something to write (in any lane), and the outer
  loop writes the outputs and re-enters it. Lanes never wait for each other: an
  exit only pauses stepping for one write. The split matters for speed on CPU:
  XLA compiles a loop whose carry is small (about 1 kB) into a single kernel, and
  runs a sequence of operations without scheduling overhead only when none of
  them touches a large buffer; keeping the output buffers out of the stepping loop
  makes small problems several times faster.
"""

from types import SimpleNamespace
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from ._misc import any_lane, lane_mask, where
from ._progress import NoProgressMeter
from ._results import RESULTS
from ._saveat import SubSaveAt
from ._while import checkpointed_loop, while_loop


def _tree_where(pred, new, old):
    return jtu.tree_map(lambda a, b: where(pred, a, b), new, old)


def _masked_write(buffer, index, value, pred):
    """`buffer[index] = value` where `pred`; elsewhere the value goes to the
    buffer's last row, a spill row that `run` drops at the end. One in-place
    `dynamic_update_slice` that never reads the buffer (no gather and select of
    the old row, forward or transposed)."""
    index = where(pred, index, buffer.shape[0] - 1)
    value = jnp.asarray(value).astype(buffer.dtype)
    return lax.dynamic_update_index_in_dim(buffer, value, index, 0)


def _with_spill_row(tree):
    return jtu.tree_map(lambda b: jnp.concatenate([b, b[-1:]]), tree)


def _without_spill_row(tree):
    return jtu.tree_map(lambda b: b[:-1], tree)


def _tree_masked_write(buffers, index, values, pred):
    return jtu.tree_map(lambda b, v: _masked_write(b, index, v, pred), buffers, values)


def value_in_step(interpolation, tnext, y1, t):
    """The state at `t` inside the step that ends at `(tnext, y1)`: the step's
    interpolant, except at the end of the step, where its value is the step's
    own (exact, and no rounding from the polynomial). Its derivatives are the
    interpolant's everywhere: at the end of the step too, an output time or a
    step time that moves moves the output along the interpolant (were they the
    derivatives of `y1`, the output's derivative with respect to its time would
    be zero there). Shared by the forward loop and the reversible adjoint's
    backward pass (one convention in both)."""
    value = interpolation.evaluate(t)
    at_end = jtu.tree_map(
        lambda y, p: lax.stop_gradient(y) + (p - lax.stop_gradient(p)), y1, value
    )
    return _tree_where(t == tnext, at_end, value)


class SaveState(eqx.Module):
    """Output buffers of one `SubSaveAt`: rows `[t0 | ts | steps | t1]`."""

    ts: Array
    ys: PyTree[Array]


class _Layout(eqx.Module):
    """Static row offsets of one `SubSaveAt` in its buffers (`diffeqsolve` puts
    the rows in Diffrax's order at the end, see `_output_order`)."""

    steps: int = eqx.field(static=True)  # save every `steps`-th step (0: never)
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
    return _Layout(
        sub.steps, num_ts, num_steps, offset_ts, offset_steps, offset_t1, size
    )


def t1_row_written(lay: _Layout, num_accepted_steps):
    """Whether the `t1` row holds the final state: not when the last accepted step
    was saved as a `steps` row already (Diffrax saves that time once)."""
    if not lay.steps:
        return jnp.asarray(True)
    return num_accepted_steps % lay.steps != 0


class StepState(eqx.Module):
    """The small per-step state carried by the stepping loop."""

    y: PyTree[Array]
    tprev: Array
    tnext: Array
    made_jump: Any
    solver_state: PyTree
    controller_state: PyTree
    result: Array
    num_accepted_steps: Array
    num_rejected_steps: Array  # every attempt not accepted, a failed one included
    ts_indices: list[Array]  # per SubSaveAt: next entry of its `ts` to write
    progress_state: Any

    # Derived, not carried: every value the stepping loop updates is one more
    # kernel per step, in run time and in compile time.
    @property
    def num_steps(self) -> Array:
        return self.num_accepted_steps + self.num_rejected_steps


class LastStep(eqx.Module):
    """What the output writes need from the last attempted step, besides the new
    state itself (which is the step's end value when there is something to write)."""

    tprev: Array
    tnext: Array
    dense_info: PyTree[Array] | None  # only when something interpolates
    write: Array  # the step was accepted and has outputs still to write
    fresh: Array  # the step was just accepted (its steps/dense rows are due)


class Record(eqx.Module):
    """What a reversible adjoint needs from the forward solve: when asked for,
    the times of the accepted steps (`ts[0] = t0`, `ts[n]` the end of accepted
    step `n`), and the state and solver state every `every` accepted steps
    (`states[j]` after step `j * every`)."""

    ts: Array | None
    states: PyTree[Array] | None


class State(eqx.Module):
    step: StepState
    save_states: list[SaveState]
    dense_ts: Array | None
    dense_infos: PyTree[Array] | None
    record: Record | None = None


class _Env(eqx.Module):
    """Everything the loop's functions close over that may hold arrays being
    differentiated."""

    terms: Any
    solver: Any
    controller: Any
    subs: list[SubSaveAt]
    args: Any
    t0: Array
    t1: Array
    t1_floor: Array
    direction: Array


# One jitted view of the solver step, shared by the shape query and the loop body
# (and by every trace of the loop's functions): later uses are hits in JAX's trace
# cache, which saves tracing the step (and the vector field) again at compile
# time. Callers cast arguments to fixed dtypes so that uses have equal avals.
@eqx.filter_jit
def _solver_step(solver, terms, args, tprev, tnext, y, state, jump):
    return solver.step(terms, tprev, tnext, y, args, state, jump)


def _max_iterations(subs, layouts, max_steps) -> int | None:
    """A bound on the iterations of the flat loop: each one attempts a step,
    except those that write a further `ts` output of the same step, and the
    last, which writes the last step's outputs."""
    if max_steps is None:
        return None
    return max_steps + sum(lay.num_ts for lay in layouts) + 1


def _run_loop(
    functions, env, carry, *, kind, checkpoints, max_iterations, writes_in_loop
):
    """Run the loop of the given kind over `(State, LastStep)`.

    `"lax"` runs the nested form: an inner loop over steps with a small carry,
    left whenever some output is due (see the module documentation). The
    differentiable kinds run a flat form, because reverse mode needs a single
    loop: each iteration writes the one output that is due (masked), then
    attempts a step unless another output of the same step is still due. No
    `lax.cond` chooses between the two: its branches would copy the carry every
    iteration. The output buffers are the loop's `buffers`, stored once rather
    than in every checkpoint."""

    def nested(carry, env):
        fns = functions(env)
        return while_loop(fns.outer_cond, fns.outer_body, carry)

    if kind == "lax":
        return nested(carry, env)

    if writes_in_loop:
        # Each iteration writes one due output, then attempts a step.
        def flat_cond(carry, env):
            return functions(env).outer_cond(carry)

        def flat_body(carry, env):
            return functions(env).write_then_step(carry)

        def flat_buffers(carry):
            state = carry[0]
            parts = (state.save_states, state.dense_ts, state.dense_infos, state.record)
            return tuple(part for part in parts if part is not None)

        cond, body, primal, buffers = flat_cond, flat_body, nested, flat_buffers

    else:
        # Nothing is written inside the loop: the carry is the `State` alone (the
        # last step's record is never read), so the checkpoints are smaller.
        carry = carry[0]

        def state_cond(state, env):
            return any_lane(functions(env).unfinished(state.step))

        def state_body(state, env):
            return functions(env).step_only((state, None))[0]

        def state_primal(state, env):
            return nested((state, functions(env).no_write), env)[0]

        def state_buffers(state):
            return tuple(part for part in (state.save_states,) if part)

        cond, body, primal, buffers = (
            state_cond,
            state_body,
            state_primal,
            state_buffers,
        )

    if kind == "bounded":
        assert max_iterations is not None
        final = while_loop(
            lambda c: cond(c, env),
            lambda c: body(c, env),
            carry,
            max_steps=max_iterations,
            kind="bounded",
        )
    else:
        assert kind == "checkpointed"
        final = checkpointed_loop(
            cond,
            body,
            carry,
            env,
            max_steps=max_iterations,
            checkpoints=checkpoints,
            buffers=buffers,
            primal=primal,
        )
    return final if writes_in_loop else (final, None)


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
    kind: str = "lax",
    checkpoints: int | None = None,
    record_times: bool = False,
    record_every: int | None = None,
) -> State:
    """Run the step loop from `t0` to `t1` (forward time axis) and return the final
    state with filled output buffers. `kind` is the loop kind of `while_loop`
    (`"lax"`, `"bounded"`, `"checkpointed"`), chosen by the adjoint.
    `record_times` keeps the accepted step times, and `record_every=k` the state
    every `k` accepted steps, in `State.record`."""
    time_dtype = jnp.result_type(t0)
    error_order = solver.error_order(terms)
    can_jump = controller.can_jump()
    interpolation_cls = solver.interpolation_cls
    layouts = [layout(sub, max_steps) for sub in subs]
    record = record_times or record_every is not None
    writes_every_step = dense or record or any(sub.steps for sub in subs)
    use_progress = not isinstance(progress_meter, NoProgressMeter)
    # Steps ending within ~100 ulp of t1 are stretched to t1, so that no tiny
    # (numerically meaningless) last step is taken.
    t1_const = lax.stop_gradient(t1)
    ulp = jnp.abs(jnp.nextafter(t1_const, jnp.asarray(jnp.inf, time_dtype)) - t1_const)
    t1_floor = t1 - 100 * ulp
    needs_dense_info = dense or any(sub.ts is not None for sub in subs)

    def as_time(t):
        return jnp.asarray(t, time_dtype)

    def functions(env: _Env) -> SimpleNamespace:
        """The loop's functions, closing over `env` (whose arrays are what a
        differentiated loop must receive explicitly, see `_while.checkpointed_loop`)
        and over static settings only."""
        terms, solver, controller, subs, args = (
            env.terms,
            env.solver,
            env.controller,
            env.subs,
            env.args,
        )
        t0, t1, t1_floor, direction = env.t0, env.t1, env.t1_floor, env.direction

        def solver_step(tprev, tnext, y, state, jump):
            return _solver_step(
                solver, terms, args, tprev, tnext, y, state, jump if can_jump else False
            )

        def write_row(sub, save_state, row, t, y, pred):
            out = sub.fn(t * direction, y, args)
            ys = _tree_masked_write(save_state.ys, row, out, pred)
            ts = _masked_write(save_state.ts, row, t * direction, pred)
            return SaveState(ts=ts, ys=ys)

        def ts_pending(sub, lay, ts_index, tnext):
            """Whether the next `SaveAt.ts` output lies at or before `tnext`."""
            if sub.ts is None:
                return jnp.asarray(False)
            index = jnp.minimum(ts_index, lay.num_ts - 1)
            return (ts_index < lay.num_ts) & (sub.ts[index] <= tnext)

        def any_ts_pending(ts_indices, tnext):
            """Whether any `SubSaveAt` has its next `ts` output at or before `tnext`."""
            pending = jnp.asarray(False)
            for sub, lay, index in zip(subs, layouts, ts_indices):
                if sub.ts is not None:
                    pending = pending | ts_pending(sub, lay, index, tnext)
            return pending

        def save_next_ts(
            sub, lay, save_state, ts_index, interpolation, tnext, y1, pred
        ):
            """Write the next `SaveAt.ts` output if it lies in the last step. One output
            per call: a step with several outputs is visited again by the outer loop
            before stepping resumes (rare, and cheaper than a nested loop)."""
            if sub.ts is None:
                return save_state, ts_index
            pred = pred & ts_pending(sub, lay, ts_index, tnext)
            t = sub.ts[jnp.minimum(ts_index, lay.num_ts - 1)]
            y_t = value_in_step(interpolation, tnext, y1, t)
            save_state = write_row(
                sub, save_state, lay.offset_ts + ts_index, t, y_t, pred
            )
            return save_state, ts_index + pred.astype(ts_index.dtype)

        def unfinished(step: StepState):
            pred = (step.tprev < t1) & (step.result == RESULTS.successful.value)
            if max_steps is not None:
                pred = pred & (step.num_steps < max_steps)
            return pred

        def attempt_step(step: StepState, hold=None) -> tuple[StepState, LastStep]:
            """Attempt one step, let the controller decide on it, and update the small
            state (masked, for lanes that have finished, and where `hold`)."""
            active = lane_mask(unfinished(step))
            if hold is not None:
                active = active & ~hold
            y1, y_error, dense_info, new_solver_state, solver_result = solver_step(
                as_time(step.tprev),
                as_time(step.tnext),
                step.y,
                step.solver_state,
                jnp.asarray(step.made_jump, bool) if can_jump else None,
            )
            (
                keep_step,
                next_tprev,
                next_tnext,
                next_made_jump,
                new_controller_state,
                controller_result,
            ) = controller.adapt_step_size(
                step.tprev,
                step.tnext,
                step.y,
                y1,
                args,
                y_error,
                error_order,
                step.controller_state,
            )
            keep_step = jnp.asarray(keep_step)
            next_tprev = jnp.minimum(next_tprev, t1)
            clip = next_tnext > t1_floor
            next_tnext = where(
                clip,
                where(keep_step, t1, next_tprev + 0.5 * (t1 - next_tprev)),
                next_tnext,
            )

            result = step.result
            for code in (solver_result, controller_result):
                if isinstance(code, RESULTS):
                    code = code.value
                result = where(result == 0, code, result)
            leaves = jtu.tree_leaves(y1)
            finite = jnp.asarray(True)
            for x in leaves:
                finite = finite & jnp.all(jnp.isfinite(x))
            result = where(
                (result == 0) & keep_step & ~finite,
                RESULTS.nonfinite_value.value,
                result,
            )
            # No progress possible (the step size underflowed, e.g. after repeated NaN
            # errors): stop with a failure instead of spinning until max_steps.
            stuck = (next_tnext <= next_tprev) & (next_tprev < t1)
            result = where((result == 0) & stuck, RESULTS.dt_min_reached.value, result)

            # A step that failed (result != 0) leaves the time and state where they were,
            # so that the returned state and time agree.
            advance = active & (result == 0)
            accept = advance & keep_step
            if use_progress:
                reached = where(advance, next_tprev, step.tprev)
                fraction = where(t1 > t0, (reached - t0) / (t1 - t0), 1.0)
                progress_state = progress_meter.step(step.progress_state, fraction)
            else:
                progress_state = None
            new_step = StepState(
                y=_tree_where(accept, y1, step.y),
                tprev=where(advance, next_tprev, step.tprev),
                tnext=where(advance, next_tnext, step.tnext),
                made_jump=where(advance, next_made_jump, step.made_jump)
                if can_jump
                else None,
                solver_state=_tree_where(accept, new_solver_state, step.solver_state),
                controller_state=_tree_where(
                    advance, new_controller_state, step.controller_state
                ),
                result=where(active, result, step.result),
                num_accepted_steps=step.num_accepted_steps + accept.astype(jnp.int32),
                num_rejected_steps=step.num_rejected_steps
                + (active & ~accept).astype(jnp.int32),
                ts_indices=step.ts_indices,
                progress_state=progress_state,
            )
            if writes_every_step:
                write = accept
            else:
                write = accept & any_ts_pending(step.ts_indices, step.tnext)
            last = LastStep(
                tprev=step.tprev,
                tnext=step.tnext,
                dense_info=dense_info if needs_dense_info else None,
                write=jnp.asarray(write),
                fresh=accept,
            )
            return new_step, last

        def step_until_write(step: StepState, last: LastStep):
            """Step until some lane has outputs to write, or every lane is done."""

            def cond(carry):
                step, last = carry
                return any_lane(unfinished(step)) & ~any_lane(last.write)

            def body(carry):
                step, _ = carry
                return attempt_step(step)

            return while_loop(cond, body, (step, last))

        def write_outputs(state: State, last: LastStep) -> tuple[State, LastStep]:
            step = state.step
            write = last.write
            fresh = last.fresh & write
            y1 = step.y  # the end of the last step wherever `write` is true
            if any(sub.ts is not None for sub in subs):
                assert last.dense_info is not None
                interpolation = interpolation_cls(
                    t0=last.tprev, t1=last.tnext, **last.dense_info
                )
            else:
                interpolation = None
            save_states = []
            ts_indices = []
            for sub, lay, s, index in zip(
                subs, layouts, state.save_states, step.ts_indices
            ):
                s, index = save_next_ts(
                    sub, lay, s, index, interpolation, last.tnext, y1, write
                )
                if sub.steps:
                    count = step.num_accepted_steps
                    pred = fresh & (count % sub.steps == 0)
                    row = lay.offset_steps + jnp.clip(
                        count // sub.steps - 1, 0, max(lay.num_steps - 1, 0)
                    )
                    s = write_row(sub, s, row, last.tnext, y1, pred)
                save_states.append(s)
                ts_indices.append(index)
            if dense:
                assert max_steps is not None
                count = step.num_accepted_steps
                dense_ts = _masked_write(
                    state.dense_ts, jnp.minimum(count, max_steps), last.tnext, fresh
                )
                dense_infos = _tree_masked_write(
                    state.dense_infos,
                    jnp.clip(count - 1, 0, max_steps - 1),
                    last.dense_info,
                    fresh,
                )
            else:
                dense_ts = dense_infos = None
            if state.record is not None:
                assert max_steps is not None
                count = step.num_accepted_steps
                rec_ts = state.record.ts
                if rec_ts is not None:
                    rec_ts = _masked_write(
                        rec_ts, jnp.minimum(count, max_steps), last.tnext, fresh
                    )
                rec_states = state.record.states
                if record_every is not None:
                    rec_states = _tree_masked_write(
                        rec_states,
                        count // record_every,
                        (y1, step.solver_state),
                        fresh & (count % record_every == 0),
                    )
                rec = Record(rec_ts, rec_states)
            else:
                rec = None
            still = write & any_ts_pending(ts_indices, last.tnext)
            step = eqx.tree_at(lambda s: s.ts_indices, step, ts_indices)
            last = eqx.tree_at(
                lambda x: (x.write, x.fresh), last, (still, jnp.zeros_like(last.fresh))
            )
            return State(step, save_states, dense_ts, dense_infos, rec), last

        def outer_cond(carry):
            state, last = carry
            return any_lane(unfinished(state.step)) | any_lane(last.write)

        def outer_body(carry):
            state, last = carry
            step, last = step_until_write(state.step, last)
            state = eqx.tree_at(lambda s: s.step, state, step)
            return write_outputs(state, last)

        def step_only(carry):
            state, last = carry
            step, last = attempt_step(state.step)
            return eqx.tree_at(lambda s: s.step, state, step), last

        def write_then_step(carry):
            """Write one due output (where one is due), then attempt a step where
            no output of the last step remains to be written."""
            state, last = write_outputs(*carry)
            # `attempt_step` relies on the loop's condition outside `vmap`; here
            # the loop may go on for a write after the last step.
            hold = last.write | ~unfinished(state.step)
            step, new_last = attempt_step(state.step, hold)
            last = _tree_where(hold, last, new_last)
            return eqx.tree_at(lambda s: s.step, state, step), last

        no_write = LastStep(
            tprev=t0,
            tnext=t0,
            dense_info=None,
            write=jnp.asarray(False),
            fresh=jnp.asarray(False),
        )

        return SimpleNamespace(
            unfinished=unfinished,
            no_write=no_write,
            write_row=write_row,
            solver_step=solver_step,
            outer_cond=outer_cond,
            outer_body=outer_body,
            write_outputs=write_outputs,
            step_only=step_only,
            write_then_step=write_then_step,
        )

    env = _Env(
        terms=terms,
        solver=solver,
        controller=controller,
        subs=subs,
        args=args,
        t0=t0,
        t1=t1,
        t1_floor=t1_floor,
        direction=direction,
    )
    top = functions(env)
    # Initial outputs: t0, and any `ts` equal to t0 (no step contains them; they
    # are a prefix of the sorted `ts`, written without a loop).
    save_states = []
    ts_indices = []
    for sub, lay in zip(subs, layouts):
        out0 = sub.fn(t0 * direction, y0, args)
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

        ts_buffer = where(at_t0, t0 * direction, jnp.inf).astype(time_dtype)
        save_states.append(SaveState(ts=ts_buffer, ys=jtu.tree_map(fill, out0)))
        ts_indices.append(ts_index)

    jump0 = jnp.asarray(made_jump, bool) if can_jump else None
    info_shape = jax.eval_shape(
        top.solver_step, as_time(t0), as_time(tnext), y0, solver_state, jump0
    )[2]
    if dense:
        assert max_steps is not None
        dense_ts = jnp.full((max_steps + 1,), jnp.inf, time_dtype).at[0].set(t0)
        # Row 0 starts as the information of a zero-length step at t0, so that
        # the dense output of a solve with t0 == t1 is y0.
        info_at_t0 = solver.step(terms, t0, t0, y0, args, solver_state, made_jump)[2]
        dense_infos = jtu.tree_map(
            lambda x, x0: jnp.zeros((max_steps, *x.shape), x.dtype).at[0].set(x0),
            info_shape,
            info_at_t0,
        )
    else:
        dense_ts = dense_infos = None

    int_zero = jnp.asarray(0, jnp.int32)
    init_step = StepState(
        y=y0,
        tprev=t0,
        tnext=tnext,
        made_jump=made_jump if can_jump else None,
        solver_state=solver_state,
        controller_state=controller_state,
        result=jnp.asarray(RESULTS.successful.value),
        num_accepted_steps=int_zero,
        num_rejected_steps=int_zero,
        ts_indices=ts_indices,
        progress_state=progress_meter.init() if use_progress else None,
    )

    def placeholder(x):
        # Any array of the right shape will do (it is read only after a step has
        # overwritten it); reusing `y0` where it fits saves compiling a fill.
        for y in jtu.tree_leaves(y0):
            if y.shape == x.shape and y.dtype == x.dtype:
                return y
        return jnp.zeros(x.shape, x.dtype)

    init_last = LastStep(
        tprev=t0,
        tnext=t0,
        dense_info=jtu.tree_map(placeholder, info_shape) if needs_dense_info else None,
        write=jnp.asarray(False),
        fresh=jnp.asarray(False),
    )

    if record:
        assert max_steps is not None
        if record_times:
            rec_ts = jnp.full((max_steps + 1,), jnp.inf, time_dtype).at[0].set(t0)
        else:
            rec_ts = None
        if record_every is not None:
            rows = max_steps // record_every + 1
            rec_states = jtu.tree_map(
                lambda x: (
                    jnp.zeros((rows, *jnp.shape(x)), jnp.result_type(x)).at[0].set(x)
                ),
                (y0, solver_state),
            )
        else:
            rec_states = None
        init_record = Record(rec_ts, rec_states)
    else:
        init_record = None
    init_state = State(
        init_step,
        *_with_spill_row((save_states, dense_ts, dense_infos, init_record)),
    )
    final, _ = _run_loop(
        functions,
        env,
        (init_state, init_last),
        kind=kind,
        checkpoints=checkpoints,
        max_iterations=_max_iterations(subs, layouts, max_steps),
        writes_in_loop=needs_dense_info or writes_every_step,
    )

    step = final.step
    result = step.result
    if max_steps is not None:
        ran_out = (step.tprev < t1) & (step.num_steps >= max_steps)
        result = where((result == 0) & ran_out, RESULTS.max_steps_reached.value, result)
    if use_progress:
        progress_meter.close(step.progress_state)

    # Final outputs: t1 (or as far as the solve got).
    save_states = []
    for sub, lay, s in zip(subs, layouts, final.save_states):
        if sub.t1:
            written = t1_row_written(lay, step.num_accepted_steps)
            s = top.write_row(sub, s, lay.offset_t1, step.tprev, step.y, written)
        save_states.append(s)
    step = eqx.tree_at(lambda s: s.result, step, result)
    outputs = (save_states, final.dense_ts, final.dense_infos, final.record)
    return State(step, *_without_spill_row(outputs))
