"""The loop's state and its buffers: the small per-step state, the output
buffers of each `SubSaveAt` with their row layout, and masked in-place writes."""

from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._misc import where
from .._saveat import SubSaveAt
from .select import tree_where


def masked_write(buffer, index, value, pred):
    """`buffer[index] = value` where `pred`; elsewhere the value goes to the
    buffer's last row, a spill row that `run` drops at the end. One in-place
    `dynamic_update_slice` that never reads the buffer (no gather and select of
    the old row, forward or transposed).

    As for `scatter_rows`, each row but the spill row is written at most once
    and holds a constant until then, so the tangent adds the value's tangent
    into the row (`_written_once`) instead of overwriting it, and the
    transpose passes the buffer's cotangent through. The spill row's tangent
    then sums those of the values masked into it; the row is dropped. The
    transpose of the overwrite zeroed the row's cotangent, which XLA did by
    copying the whole buffer at every backward step: the Lorenz gradient
    through dense output cost 1.4x Diffrax's time at `max_steps=1000` and 7.6x
    at 16,384, through `SaveAt(steps=True)` 0.48x and 2.3x."""
    index = where(pred, index, buffer.shape[0] - 1)
    value = jnp.asarray(value).astype(buffer.dtype)
    return _write_row(buffer, index, value)


def _written_once(primal):
    """`primal(buffer, rows, values)`, a write of rows that hold constants until
    then, with the JVP of `masked_write` and `scatter_rows`: the values'
    tangents are added into the buffer's (in place in forward mode; the
    transpose passes the buffer's cotangent through)."""
    write = jax.custom_jvp(primal)

    @write.defjvp
    def _jvp(primals, tangents):
        buffer, rows, values = primals
        buffer_dot, _, values_dot = tangents
        out_dot = buffer_dot.at[rows].add(
            values_dot, mode="drop", indices_are_sorted=True, unique_indices=True
        )
        return write(buffer, rows, values), out_dot

    return write


_write_row = _written_once(
    lambda buffer, index, value: lax.dynamic_update_index_in_dim(
        buffer, value, index, 0
    )
)


def scatter_rows(buffer, rows, values):
    """`buffer[rows] = values` for sorted, distinct `rows`; rows past the end of
    the buffer are dropped (how `values` not to be written are masked, again
    without reading the buffer).

    The rows written must be constants until then (the `inf` rows of an output
    buffer, each written once): their tangent is zero, so the tangent of the
    result is the buffer's plus the values' scattered in (`_written_once`),
    whose transpose passes the buffer's cotangent through unchanged. The
    transpose of a `set` would also zero the rows' cotangent, a scatter into
    the whole buffer that XLA copied twice per backward step (Lorenz gradient,
    10^5 saved times: 1.14 -> 0.34 of Diffrax's time)."""
    values = jnp.asarray(values).astype(buffer.dtype)
    return _scatter_rows(buffer, rows, values)


_scatter_rows = _written_once(
    lambda buffer, rows, values: buffer.at[rows].set(
        values, mode="drop", indices_are_sorted=True, unique_indices=True
    )
)


def with_spill_row(tree):
    return jtu.tree_map(lambda b: jnp.concatenate([b, b[-1:]]), tree)


def without_spill_row(tree):
    return jtu.tree_map(lambda b: b[:-1], tree)


def tree_masked_write(buffers, index, values, pred):
    return jtu.tree_map(lambda b, v: masked_write(b, index, v, pred), buffers, values)


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
    return tree_where(t == tnext, at_end, value)


class SaveState(eqx.Module):
    """Output buffers of one `SubSaveAt`: rows `[t0 | ts | steps | t1]`."""

    ts: Array
    ys: PyTree[Array]


class Layout(eqx.Module):
    """Static row offsets of one `SubSaveAt` in its buffers (`diffeqsolve` puts
    the rows in Diffrax's order at the end, see `_output_order`)."""

    steps: int = eqx.field(static=True)  # save every `steps`-th step (0: never)
    num_ts: int = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    offset_ts: int = eqx.field(static=True)
    offset_steps: int = eqx.field(static=True)
    offset_t1: int = eqx.field(static=True)
    size: int = eqx.field(static=True)


def layout(sub: SubSaveAt, max_steps: int | None) -> Layout:
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
    return Layout(
        sub.steps, num_ts, num_steps, offset_ts, offset_steps, offset_t1, size
    )


def t1_row_written(lay: Layout, num_accepted_steps):
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
    # Per step attempt (row `num_steps`, a spill row last): the solver's record
    # of its decisions (`AbstractSolver.step_with_tape`). A buffer of the
    # checkpointed loop: its recomputations read the forward pass's rows.
    tape: Array | None = None
