"""`ReversibleAdjoint`'s backward pass (`reverse_core`): the recorded steps
undone from the last, each linearised while it is reconstructed, with the
cotangents of the outputs saved in it pulled back through its interpolation;
batch-aware under `vmap`."""

import functools
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax import custom_batching

from .._controller.constant import step_time
from .._loop import t1_row_written, value_in_step
from .._misc import (
    lane_rows,
    lane_where,
    tree_add,
    tree_zeros_like,
    where,
)
from .._rows import LARGE, as_values
from .._solver.base import is_directly
from .._solver.reversible import Reversible
from .reversible_coupled import coupled_backward_step, deferral

# Whether `Reversible`'s parameter cotangents may be pulled back in blocks.
DEFER = True


class Static(eqx.Module):
    """What the backward pass needs besides arrays (hashable, for tracing)."""

    solver: Any = eqx.field(static=True)
    fns: tuple = eqx.field(static=True)
    steps: tuple = eqx.field(static=True)
    t0_rows: tuple = eqx.field(static=True)
    t1_rows: tuple = eqx.field(static=True)
    layouts: tuple = eqx.field(static=True)
    every: int | None = eqx.field(static=True)
    theta_static: Any = eqx.field(static=True)


def reverse_core(static: Static, lanes, theta_diff, theta_other, sum_shared):
    """The backward pass, batch-aware: a `custom_vmap` whose batching rule runs
    one loop over all lanes, with the per-lane values stacked. With
    `sum_shared`, the cotangents of parameters shared by the lanes are summed
    inside each step (one accumulator); otherwise each lane gets its own (the
    `vmap(grad(...))` form), while the lanes' evaluations still share them."""

    @custom_batching.custom_vmap
    def core(lanes, theta_diff, theta_other):
        lanes = jtu.tree_map(lambda x: x[None], lanes)
        axes = jtu.tree_map(lambda _: None, (theta_diff, theta_other))
        lane_ct, theta_ct = _reverse(static, lanes, theta_diff, theta_other, axes)
        return jtu.tree_map(lambda x: x[0], lane_ct), theta_ct

    @core.def_vmap
    def _rule(axis_size, in_batched, lanes, theta_diff, theta_other):
        lanes_b, diff_b, other_b = in_batched

        def stack(x, b):
            return x if b else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))

        lanes = jtu.tree_map(stack, lanes, lanes_b)
        axes = jtu.tree_map(lambda b: 0 if b else None, (diff_b, other_b))
        lane_ct, theta_ct = _reverse(
            static, lanes, theta_diff, theta_other, axes, per_lane=not sum_shared
        )
        if not sum_shared:
            diff_b = jtu.tree_map(lambda _: True, diff_b)
        out_batched = (jtu.tree_map(lambda _: True, lane_ct), diff_b)
        return (lane_ct, theta_ct), out_batched

    return core(lanes, theta_diff, theta_other)


class _Backward:
    """What the backward pass's per-lane functions need: the solver, the
    differentiable and other parameters and their lane axes. (A plain class: it
    holds traced arrays and is built inside the backward rule.)"""

    def __init__(self, static: Static, theta_diff, theta_other, axes, per_lane):
        self.static = static
        self.solver = static.solver
        self.theta_diff = theta_diff
        self.theta_other = theta_other
        self.diff_axes, self.other_axes = axes
        self.per_lane = per_lane
        self.deferral: Any = None  # a `reversible_coupled.Deferral`, if used

    def theta(self, td, to):
        return eqx.combine(td, to, self.static.theta_static)

    def vm(self, fn, *lane_args):
        """`fn(*lane_args, theta_diff, theta_other)` for every lane."""
        in_axes = (0,) * len(lane_args) + (self.diff_axes, self.other_axes)
        return jax.vmap(fn, in_axes=in_axes)

    def theta_zeros(self, num_lanes):
        """A zero cotangent of `theta_diff`: one a lane with `per_lane`."""
        if not self.per_lane:
            return tree_zeros_like(self.theta_diff)
        return jtu.tree_map(
            lambda x, a: jnp.zeros(
                x.shape if a == 0 else (num_lanes, *x.shape), x.dtype
            ),
            self.theta_diff,
            self.diff_axes,
        )

    def vjp(self, fn, lane_args, wrt):
        """`fn(*lane_args, theta_diff, theta_other)` for every lane (each of
        `lane_args` has a lane axis) and its pullback `pull(ct) -> (cts,
        theta_ct)`: `cts` those of `lane_args[i]` for `i` in `wrt`.

        `theta_ct` is summed over the lanes where `theta_diff` is shared; with
        `per_lane` (the `vmap(grad(...))` form) each lane gets its own. Then
        each lane's product is taken inside a `vmap` over the lanes with
        `theta_diff` unbatched, so the evaluation still shares the parameters
        (a dense layer is one matrix product over the lanes, as in the forward
        pass), and only the parameters' cotangents are per lane. Broadcasting
        the parameters to the lanes instead made every lane multiply by its own
        copy of the weights: 2.5x Diffrax's time for the width-100 neural ODE
        at batch 100 in float32."""
        to = self.theta_other

        def put(args, values):
            args = list(args)
            for i, v in zip(wrt, values):
                args[i] = v
            return args

        chosen = [lane_args[i] for i in wrt]
        batched = self.vm(fn, *(0,) * len(lane_args))
        if not self.per_lane:
            return jax.vjp(
                lambda values, td: batched(*put(lane_args, values), td, to),
                chosen,
                self.theta_diff,
            )
        out = batched(*lane_args, self.theta_diff, to)

        def one(args, ct, td, to):
            _, pull = jax.vjp(
                lambda values, td: fn(*put(args, values), td, to),
                [args[i] for i in wrt],
                td,
            )
            return pull(ct)

        def pull(ct):
            in_axes = (0, 0, self.diff_axes, self.other_axes)
            return jax.vmap(one, in_axes=in_axes)(
                list(lane_args), ct, self.theta_diff, to
            )

        return out, pull

    def linearised_backward_step(self):
        """`(ta, tb, x1) -> (x0, dense, pull)`: undo the step `(ta, tb]` of every
        lane; `pull` maps the cotangents of the state at `tb` and of the dense
        information to those of the state at `ta` and of `theta_diff`."""
        solver, theta = self.solver, self.theta
        if is_directly(solver, Reversible):
            return coupled_backward_step(
                solver, self.vm, self.vjp, theta, self.theta_diff, self.theta_other
            )

        def step_lane(ta, tb, x, td, to):
            terms, args = theta(td, to)
            y, s = x
            y1, _, dense, s1, _ = solver.step(terms, ta, tb, y, args, s, False)
            return (y1, s1), dense

        def back_lane(ta, tb, x1, td, to):
            terms, args = theta(td, to)
            y1, s1 = x1
            y0, _, s0, _ = solver.backward_step(terms, ta, tb, y1, args, s1, False)
            return y0, s0

        def backward(ta, tb, x1):
            x0 = self.vm(back_lane, 0, 0, 0)(
                ta, tb, x1, self.theta_diff, self.theta_other
            )
            (_, dense), pull = self.vjp(step_lane, (ta, tb, x0), (2,))

            def pull_step(x1_ct, dense_ct):
                (x0_ct,), theta_ct = pull((x1_ct, dense_ct))
                return x0_ct, theta_ct

            return x0, dense, pull_step

        return backward

    def in_step_fn(self, i):
        """Output `i`'s `fn` at a time inside a step, for one lane."""
        fn, solver, theta = self.static.fns[i], self.solver, self.theta

        def out(ta, tb, dense, y1, t, direction, td, to):
            _, args = theta(td, to)
            interpolation = solver.interpolation_cls(t0=ta, t1=tb, **dense)
            return fn(t * direction, value_in_step(interpolation, tb, y1, t), args)

        return out

    def pull_saved(self, i, t, y, ct_out, direction):
        """Cotangents of `y` and `theta_diff` from a row saved as
        `fn(t, y, args)`."""
        fn_i, theta = self.static.fns[i], self.theta

        def out(t, y, direction, td, to):
            _, args = theta(td, to)
            return fn_i(t * direction, y, args)

        _, pull = self.vjp(out, (t, y, direction), (1,))
        (y_ct,), theta_ct = pull(ct_out)
        return y_ct, theta_ct


def _time_of(lanes, m):
    """The end of accepted step `m` (`t0` for `m = 0`) of every lane."""
    if lanes["times"] is not None:
        return lane_rows(lanes["times"], m)
    # Constant steps: `t0 + m dt0` up to the last, which ends at the end.
    start = step_time(lanes["controller_state"], m)
    return where(m >= lanes["n"], lanes["tend"], start).astype(lanes["t0"].dtype)


def _pull_final_rows(bw: _Backward, lanes, theta_ct):
    """Cotangents from the outputs of the last state: the t1 rows and the last
    `steps` row."""
    static, n = bw.static, lanes["n"]
    y_ct = lanes["y_ct"]
    for i, lay in enumerate(static.layouts):
        if static.t1_rows[i]:
            ct_row = lane_rows(lanes["ys_ct"][i], jnp.full_like(n, lay.offset_t1))
            if lay.steps:
                # The row holds the final state only if the last step was not
                # saved as a `steps` row already.
                written = t1_row_written(lay, n)
                ct_row = lane_where(written, ct_row, tree_zeros_like(ct_row))
            dy, dth = bw.pull_saved(
                i, lanes["tend"], lanes["y"], ct_row, lanes["direction"]
            )
            y_ct, theta_ct = tree_add(y_ct, dy), tree_add(theta_ct, dth)
    time_of = functools.partial(_time_of, lanes)
    return _pull_steps_rows(
        static, lanes, n, lanes["y"], time_of, y_ct, theta_ct, bw.pull_saved
    )


def _backward_body(bw: _Backward, lanes, backward_step, carry):
    """Undo the last remaining accepted step of every active lane and pull the
    cotangents of its outputs and of its end state back through it."""
    static = bw.static
    time_of = functools.partial(_time_of, lanes)
    n, x, x_ct, theta_ct, ts_ct, pending = carry
    active = n > 0
    m = jnp.maximum(n - 1, 0)
    first = lanes["t0"]
    ta = where(active, time_of(m), first)
    tb = where(active, time_of(m + 1), first)
    if _large(x):
        # The step times reach the step's kernels as values, not as a chain of
        # scalar operations in every element (`_rows`): heat equation gradient,
        # Euler, 10^5 points: 4.0 -> 2.5 of Diffrax's checkpointed time.
        ta, tb = as_values((ta, tb), n)
    x_prev, dense, pull_step = backward_step(ta, tb, x)
    if static.every is not None:
        stored = lane_rows(lanes["states"], m // static.every)
        x_prev = lane_where(active & (m % static.every == 0), stored, x_prev)
    y1_ct, s1_ct = lane_where(active, x_ct, tree_zeros_like(x_ct))
    dense_ct = tree_zeros_like(dense)
    new_ts_ct = []
    for i, lay in enumerate(static.layouts):
        sub_ts = lanes["subs_ts"][i]
        if sub_ts is None:
            new_ts_ct.append(None)
            continue
        (dense_ct, y1_ct, theta_ct, ts_ct_i) = _pull_ts_rows(
            i,
            lay,
            lanes,
            active,
            ta,
            tb,
            dense,
            x[0],
            sub_ts,
            (dense_ct, y1_ct, theta_ct, ts_ct[i]),
            bw,
        )
        new_ts_ct.append(ts_ct_i)
    x_prev_ct, theta_step_ct = pull_step((y1_ct, s1_ct), dense_ct)
    if pending is None:
        theta_ct = tree_add(theta_ct, theta_step_ct)
    else:  # recorded, pulled back with the block (`reversible_coupled`)
        theta_ct, pending = bw.deferral.absorb(theta_ct, pending, theta_step_ct)
    y_prev_ct, s_prev_ct = x_prev_ct
    y_prev_ct, theta_ct = _pull_steps_rows(
        static,
        lanes,
        jnp.where(active, m, 0),
        x_prev[0],
        time_of,
        y_prev_ct,
        theta_ct,
        bw.pull_saved,
    )
    x = lane_where(active, x_prev, x)
    x_ct = lane_where(active, (y_prev_ct, s_prev_ct), x_ct)
    return n - active.astype(n.dtype), x, x_ct, theta_ct, new_ts_ct, pending


def _large(x) -> bool:
    """Whether a leaf of the lanes' state `x` has `_rows.LARGE` elements a lane."""
    return any(
        jnp.size(leaf) >= LARGE * max(jnp.shape(leaf)[0], 1)
        for leaf in jtu.tree_leaves(x)
        if jnp.ndim(leaf)
    )


def _pull_t0_rows(bw: _Backward, lanes, y0_ct, theta_ct):
    """Cotangents from the outputs at t0: the t0 row and the `ts` at or before
    t0, all `fn(t0, y0)`."""
    static = bw.static
    num_lanes = lanes["n"].shape[0]
    time_dtype = lanes["t0"].dtype
    for i, lay in enumerate(static.layouts):
        sub_ts = lanes["subs_ts"][i]
        if not static.t0_rows[i] and sub_ts is None:
            continue
        weight = jnp.zeros((num_lanes, lay.size), time_dtype)
        if static.t0_rows[i]:
            weight = weight.at[:, 0].set(1)
        if sub_ts is not None:
            at_t0 = (sub_ts <= lanes["t0"][:, None]).astype(time_dtype)
            weight = weight.at[:, lay.offset_ts : lay.offset_steps].set(at_t0)
        ct_out = jtu.tree_map(
            lambda c, weight=weight: jnp.einsum(
                "br,br...->b...", weight.astype(c.dtype), c
            ),
            lanes["ys_ct"][i],
        )
        dy, dth = bw.pull_saved(i, lanes["t0"], lanes["y0"], ct_out, lanes["direction"])
        y0_ct, theta_ct = tree_add(y0_ct, dy), tree_add(theta_ct, dth)
    return y0_ct, theta_ct


def _reverse(static: Static, lanes, theta_diff, theta_other, axes, per_lane=False):
    """Walk the accepted steps of every lane from last to first.

    `lanes`: per-lane values with a leading lane axis. `theta_diff`: the
    differentiable parameters (`terms`, `args`), with lane axis per `axes`.
    Returns the per-lane cotangents (`y0`, `s0`, `ts`) and those of
    `theta_diff` (summed over lanes where it is shared, unless `per_lane`)."""
    bw = _Backward(static, theta_diff, theta_other, axes, per_lane)
    backward_step = bw.linearised_backward_step()
    pending = None
    # The deferred cotangents are summed over the lanes: not for `per_lane`.
    if DEFER and not per_lane and is_directly(static.solver, Reversible):
        found = deferral(static.solver, bw.vm, bw.theta, theta_diff, theta_other, lanes)
        if found is not None:
            backward_step, bw.deferral = found
            pending = bw.deferral.init()
    theta_zeros = bw.theta_zeros(lanes["n"].shape[0])
    y_ct, theta_ct = _pull_final_rows(bw, lanes, theta_zeros)
    ts_ct = [
        None if ts is None else jnp.zeros(ts.shape, ts.dtype) for ts in lanes["subs_ts"]
    ]
    carry = (
        lanes["n"],
        (lanes["y"], lanes["s"]),
        (y_ct, lanes["s_ct"]),
        theta_ct,
        ts_ct,
        pending,
    )
    _, _, x_ct, theta_ct, ts_ct, pending = lax.while_loop(
        lambda carry: jnp.any(carry[0] > 0),
        functools.partial(_backward_body, bw, lanes, backward_step),
        carry,
    )
    if pending is not None:
        theta_ct = bw.deferral.finish(theta_ct, pending)
    y0_ct, s0_ct = x_ct
    y0_ct, theta_ct = _pull_t0_rows(bw, lanes, y0_ct, theta_ct)
    return dict(y0=y0_ct, s0=s0_ct, ts=ts_ct), theta_ct


def _pull_steps_rows(static, lanes, count, y, time_of, y_ct, theta_ct, pull_saved):
    """Add the cotangents of the `SaveAt(steps=k)` rows written after accepted
    step `count` (per lane), from state `y`."""
    for i, lay in enumerate(static.layouts):
        k = static.steps[i]
        if not k:
            continue
        due = (count >= 1) & (count % k == 0)
        row = lay.offset_steps + jnp.clip(count // k - 1, 0, max(lay.num_steps - 1, 0))
        ct_row = lane_rows(lanes["ys_ct"][i], row)
        ct_row = lane_where(due, ct_row, tree_zeros_like(ct_row))
        dy, dth = pull_saved(i, time_of(count), y, ct_row, lanes["direction"])
        y_ct, theta_ct = tree_add(y_ct, dy), tree_add(theta_ct, dth)
    return y_ct, theta_ct


def _pull_ts_rows(i, lay, lanes, active, ta, tb, dense, y1, sub_ts, acc, bw):
    """Pull back the `SaveAt(ts)` outputs that lie in the step `(ta, tb]` of
    each lane: into the step's dense information, its end state `y1`, the
    parameters and `ts` itself."""
    direction = lanes["direction"]
    lo = jax.vmap(lambda ts, t: jnp.searchsorted(ts, t, side="right"))(sub_ts, ta)
    hi = jax.vmap(lambda ts, t: jnp.searchsorted(ts, t, side="right"))(sub_ts, tb)
    hi = jnp.where(active, hi, lo)
    num_ts = sub_ts.shape[1]

    def cond(carry):
        j = carry[0]
        return jnp.any(j < hi)

    def body(carry):
        j, (dense_ct, y1_ct, theta_ct, ts_ct) = carry
        live = j < hi
        jj = jnp.minimum(j, num_ts - 1)
        t = lane_rows(sub_ts, jj)
        ct_out = lane_rows(lanes["ys_ct"][i], lay.offset_ts + jj)
        ct_out = lane_where(live, ct_out, tree_zeros_like(ct_out))
        _, pull = bw.vjp(bw.in_step_fn(i), (ta, tb, dense, y1, t, direction), (2, 3, 4))
        (d_dense, d_y1, d_t), d_theta = pull(ct_out)
        ct_time = lane_rows(lanes["ts_ct"][i], lay.offset_ts + jj) * direction
        d_t = where(live, d_t + ct_time, 0)
        ts_ct = ts_ct.at[jnp.arange(ts_ct.shape[0]), jj].add(d_t)
        acc = (
            tree_add(dense_ct, d_dense),
            tree_add(y1_ct, d_y1),
            tree_add(theta_ct, d_theta),
            ts_ct,
        )
        return j + live.astype(j.dtype), acc

    _, acc = lax.while_loop(cond, body, (lo, acc))
    return acc
